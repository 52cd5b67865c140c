/*
 * bench/gc_bench.c - chunklock's GC against the floor (bench/gc_floor.c)
 * on identical generated stores (bench/gen_store.c). docs/benchmarks.md
 * "GC against the floor" has the method and the results.
 *
 *     gc_bench [--sizes 100k,250k,500k,1M] [--runs 5] [--dir /var/tmp/ckl-bench]
 *              [--seed 1] [--json FILE] [--md FILE] [--strace-max 100k]
 *              [--cold] [--keep] [--quick]
 *
 * --json writes figure-4 records in the shared schema (bench_record.h):
 * per size the wall time against the floor (target <= 1.0x, with "x" =
 * chunks: the curve, series "chunklock" and "floor"), then mark, sweep,
 * user, sys, peak RSS (target <= 256 MiB at 1M), syscalls. A size whose
 * store the disk cannot hold is skipped with a record saying so.
 *
 * For each size: generate the store once (gen_store), then runs x
 * (chunklock, floor), interleaved A B A B ..., each on a freshly reset
 * store (gen_store --reset puts back the garbage the previous run
 * removed and sets every chunk's times back to 2020), after sync(2) so
 * that the writeback of the reset is not charged to the measured run
 * (--cold also drops the page cache, which needs root). Each measured run
 * is its own process (chunklock: this program with --child-gc; the floor:
 * gc_floor), timed from spawn to exit by the parent; user, sys and peak
 * RSS come from wait4()'s rusage of that process alone. Every run is
 * checked: exactly N/2 chunks removed, N/2 referenced, N seen, none
 * missing; otherwise the benchmark fails.
 *
 * With strace installed, one extra run of each (not timed) for sizes up
 * to --strace-max gives syscall counts (strace -c -f).
 *
 * The chunklock run: ckl_store_open + ckl_gc_run with atime safety 0
 * (opts.use_safety), 2 sweep threads (the default), default mode (not
 * strict). Results are the median, min and max over the runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_record.h"
#include "chunklock/chunklock.h"

extern char **environ;

#define MAX_RUNS BR_MAX_RUNS
#define MAX_SIZES 8

/* ---- child mode: one chunklock GC ------------------------------------------ */

static void log_stderr(ckl_log_level level, const char *msg, void *ud) {
  (void)ud;
  fprintf(stderr, "chunklock %s: %s\n", ckl_log_level_name(level), msg);
}

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int child_gc(const char *store) {
  ckl_log_set(log_stderr, NULL, CKL_LOG_WARN);
  int64_t t0 = mono_ns();
  ckl_store *st;
  int rc = ckl_store_open(store, NULL, &st);
  if (rc < 0) {
    fprintf(stderr, "gc_bench: open %s: %s\n", store, ckl_strerror(rc));
    return 1;
  }
  ckl_gc_opts o = {.use_safety = 1, .atime_safety_s = 0};
  ckl_gc_result r;
  rc = ckl_gc_run(st, &o, &r);
  ckl_store_close(st);
  if (rc < 0) {
    fprintf(stderr, "gc_bench: gc of %s: %s\n", store, ckl_strerror(rc));
    return 1;
  }
  printf("{\"mark_ns\":%lld,\"sweep_ns\":%lld,\"purge_ns\":%lld,\"total_ns\":%lld,"
         "\"index_files\":%llu,\"references\":%llu,\"referenced_chunks\":%llu,"
         "\"missing_chunks\":%llu,\"disk_chunks\":%llu,\"removed_chunks\":%llu,"
         "\"removed_bytes\":%llu,\"pending_chunks\":%llu,\"touch_set_bytes\":%llu}\n",
         (long long)r.mark_ns, (long long)r.sweep_ns, (long long)r.purge_ns,
         (long long)(mono_ns() - t0), (unsigned long long)r.index_files,
         (unsigned long long)r.references, (unsigned long long)r.referenced_chunks,
         (unsigned long long)r.missing_chunks, (unsigned long long)r.disk_chunks,
         (unsigned long long)r.removed_chunks, (unsigned long long)r.removed_bytes,
         (unsigned long long)r.pending_chunks, (unsigned long long)r.touch_set_bytes);
  return 0;
}

/* ---- spawning ------------------------------------------------------------- */

typedef struct proc_result {
  int64_t wall_ns;
  struct rusage ru;
  char out[4096]; /* stdout (one JSON line) */
} proc_result;

/* Run argv, capture stdout, rusage of that child only. 0 if it exited 0. */
static int run(char *const argv[], proc_result *pr) {
  memset(pr, 0, sizeof *pr);
  int pfd[2];
  if (pipe2(pfd, O_CLOEXEC) != 0) return -errno;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
  pid_t pid;
  int64_t t0 = mono_ns();
  int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(pfd[1]);
  if (rc != 0) {
    close(pfd[0]);
    fprintf(stderr, "gc_bench: spawn %s: %s\n", argv[0], strerror(rc));
    return -rc;
  }
  size_t used = 0;
  for (;;) {
    char tmp[4096];
    ssize_t n = read(pfd[0], tmp, sizeof tmp);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    size_t k = (size_t)n;
    if (used + k >= sizeof pr->out) k = sizeof pr->out - 1 - used;
    memcpy(pr->out + used, tmp, k);
    used += k;
  }
  pr->out[used] = '\0';
  close(pfd[0]);
  int status;
  while (wait4(pid, &status, 0, &pr->ru) < 0 && errno == EINTR) {
  }
  pr->wall_ns = mono_ns() - t0;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "gc_bench: %s failed (status 0x%x)\n", argv[0], status);
    return -ECHILD;
  }
  return 0;
}

static long long jnum(const char *json, const char *key) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":", key);
  const char *p = strstr(json, pat);
  return p ? strtoll(p + strlen(pat), NULL, 10) : -1;
}

static double tv_s(struct timeval tv) { return (double)tv.tv_sec + (double)tv.tv_usec / 1e6; }

/* ---- statistics: bench_record.h (median, min, max) --------------------------- */

typedef br_series series;
#define med br_med
#define smin br_min
#define smax br_max

typedef struct impl_stats {
  series wall, user, sys, rss, mark, sweep, purge;
  long long syscalls; /* strace total, -1 if not measured */
  char top[512];      /* strace: the busiest syscalls, "name calls, ..." */
} impl_stats;

static void record(impl_stats *s, const proc_result *pr) {
  int i = s->wall.n;
  s->wall.v[i] = (double)pr->wall_ns / 1e9;
  s->user.v[i] = tv_s(pr->ru.ru_utime);
  s->sys.v[i] = tv_s(pr->ru.ru_stime);
  s->rss.v[i] = (double)pr->ru.ru_maxrss / 1024.0; /* KiB -> MiB */
  s->mark.v[i] = (double)jnum(pr->out, "mark_ns") / 1e9;
  s->sweep.v[i] = (double)jnum(pr->out, "sweep_ns") / 1e9;
  long long pu = jnum(pr->out, "purge_ns");
  s->purge.v[i] = pu < 0 ? 0 : (double)pu / 1e9;
  s->wall.n = s->user.n = s->sys.n = s->rss.n = s->mark.n = s->sweep.n = s->purge.n = i + 1;
}

/* ---- output ------------------------------------------------------------------ */

typedef struct outbuf {
  br_out json;
  FILE *md;
} outbuf;

#define FIG 4

/* A figure-4 record of chunklock against the floor: value and floor are
 * medians, min/max chunklock's. x (chunks) makes it a point of the curve
 * named `series`. */
static void emit_vs(outbuf *o, const char *name, const char *unit, const series *ck,
                    const series *fl, double target, const char *note, double x,
                    const char *series_name) {
  br_rec r = BR_REC(FIG, name, med(ck), unit);
  r.floor = fl ? med(fl) : NAN;
  r.min = smin(ck);
  r.max = smax(ck);
  r.runs = ck->n;
  r.target = target;
  r.cmp = isnan(target) ? NULL : "<=";
  r.note = note;
  r.x = x;
  r.series = series_name;
  br_emit(&o->json, &r);
}

static void md_row(FILE *f, const char *what, double a, double b, int prec) {
  char x[32], y[32], r[32];
  snprintf(x, sizeof x, "%.*f", prec, a);
  if (b >= 0) snprintf(y, sizeof y, "%.*f", prec, b);
  else snprintf(y, sizeof y, "–");
  if (b > 0) snprintf(r, sizeof r, "%.2f", a / b);
  else snprintf(r, sizeof r, "–");
  fprintf(f, "| %s | %s | %s | %s |\n", what, x, y, r);
}

/* ---- the benchmark ------------------------------------------------------------ */

typedef struct bench_opts {
  unsigned long long sizes[MAX_SIZES];
  int nsizes, runs, cold, keep;
  unsigned long long seed, strace_max;
  const char *dir, *json_path, *md_path;
  char self[PATH_MAX], gen[PATH_MAX], floor_bin[PATH_MAX];
} bench_opts;

static unsigned long long parse_count(const char *s) {
  char *end;
  double v = strtod(s, &end);
  if (*end == 'k' || *end == 'K') v *= 1e3;
  else if (*end == 'm' || *end == 'M') v *= 1e6;
  return (unsigned long long)v;
}

static void size_label(unsigned long long n, char *buf, size_t len) {
  if (n % 1000000 == 0) snprintf(buf, len, "%lluM", n / 1000000);
  else if (n % 1000 == 0) snprintf(buf, len, "%lluk", n / 1000);
  else snprintf(buf, len, "%llu", n);
}

static int rm_rf(const char *path) {
  proc_result pr;
  char *argv[] = {"/bin/rm", "-rf", (char *)path, NULL};
  return run(argv, &pr);
}

static void drop_caches(void) {
  sync();
  int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
  if (fd < 0 || write(fd, "3", 1) != 1)
    fprintf(stderr, "gc_bench: --cold: cannot drop caches: %s\n", strerror(errno));
  if (fd >= 0) close(fd);
}

/* Reset the store; `expect` is the number of chunks the reset must write
 * back (the garbage the previous run removed). */
static int reset_store(const bench_opts *b, const char *store, unsigned long long n,
                       long long expect, series *reset_s) {
  char nbuf[32], sbuf[32];
  snprintf(nbuf, sizeof nbuf, "%llu", n);
  snprintf(sbuf, sizeof sbuf, "%llu", b->seed);
  char *argv[] = {(char *)b->gen, "--reset", "-n", nbuf, "--seed", sbuf, (char *)store, NULL};
  proc_result pr;
  int rc = run(argv, &pr);
  if (rc < 0) return rc;
  if (jnum(pr.out, "written") != expect) {
    fprintf(stderr, "gc_bench: reset wrote %lld chunks, expected %lld\n", jnum(pr.out, "written"),
            expect);
    return -EPROTO;
  }
  if (reset_s->n < MAX_RUNS) reset_s->v[reset_s->n++] = (double)pr.wall_ns / 1e9;
  sync();
  if (b->cold) drop_caches();
  return 0;
}

static int check(const char *who, const proc_result *pr, unsigned long long n) {
  long long removed = jnum(pr->out, "removed_chunks"), refd = jnum(pr->out, "referenced_chunks");
  long long disk = jnum(pr->out, "disk_chunks"), missing = jnum(pr->out, "missing_chunks");
  if (removed != (long long)(n - n / 2) || refd != (long long)(n / 2) || disk != (long long)n ||
      missing != 0) {
    fprintf(stderr, "gc_bench: %s: wrong outcome (removed %lld, referenced %lld, seen %lld, "
            "missing %lld; expected %llu, %llu, %llu, 0): %s\n",
            who, removed, refd, disk, missing, n - n / 2, n / 2, n, pr->out);
    return -EPROTO;
  }
  return 0;
}

/* strace -c -f one run; fill total calls and the busiest syscalls. */
static void strace_run(const bench_opts *b, char *const cmd[], impl_stats *s, const char *store) {
  char out[PATH_MAX + 16];
  snprintf(out, sizeof out, "%s.strace", store);
  char *argv[16] = {"/usr/bin/strace", "-c", "-f", "-o", out};
  int k = 5;
  for (int i = 0; cmd[i] && k < 15; i++) argv[k++] = cmd[i];
  argv[k] = NULL;
  proc_result pr;
  (void)b;
  s->syscalls = -1;
  if (run(argv, &pr) < 0) return;
  FILE *f = fopen(out, "re");
  if (!f) return;
  char line[512];
  typedef struct { long long calls; char name[48]; } sc;
  sc top[64];
  int nt = 0;
  while (fgets(line, sizeof line, f)) {
    double pct, secs;
    long long usecs, calls, errors;
    char name[48];
    if (sscanf(line, "%lf %lf %lld %lld %lld %47s", &pct, &secs, &usecs, &calls, &errors, name) == 6 ||
        sscanf(line, "%lf %lf %lld %lld %47s", &pct, &secs, &usecs, &calls, name) == 5) {
      if (!strcmp(name, "total")) s->syscalls = calls;
      else if (nt < 64) {
        top[nt].calls = calls;
        snprintf(top[nt].name, sizeof top[nt].name, "%s", name);
        nt++;
      }
    }
  }
  fclose(f);
  unlink(out);
  /* strace sorts by time; list by calls instead, the six largest. */
  for (int i = 0; i < nt; i++)
    for (int j = i + 1; j < nt; j++)
      if (top[j].calls > top[i].calls) {
        sc t = top[i];
        top[i] = top[j];
        top[j] = t;
      }
  size_t used = 0;
  s->top[0] = '\0';
  for (int i = 0; i < nt && i < 6; i++)
    used += (size_t)snprintf(s->top + used, sizeof s->top - used, "%s%s %lld", i ? ", " : "",
                             top[i].name, top[i].calls);
}

static const char *fs_type(const char *path) {
  static char buf[PATH_MAX + 512];
  const size_t len = sizeof buf;
  /* the longest mount point that prefixes the real path */
  char real[PATH_MAX];
  if (!realpath(path, real)) return "?";
  FILE *f = fopen("/proc/self/mounts", "re");
  if (!f) return "?";
  char dev[256], mnt[PATH_MAX], type[64];
  size_t best = 0;
  snprintf(buf, len, "?");
  while (fscanf(f, "%255s %4095s %63s %*[^\n]", dev, mnt, type) == 3) {
    size_t l = strlen(mnt);
    bool prefix = !strncmp(real, mnt, l) && (real[l] == '/' || real[l] == '\0' || l == 1);
    if (prefix && l >= best) {
      best = l;
      snprintf(buf, len, "%s on %s (%s)", type, mnt, dev);
    }
  }
  fclose(f);
  return buf;
}

/* A store of n chunks needs about one 4 KiB block and one inode per chunk
 * (payloads are 1-4 KiB), the 65,536 prefix directories, and the indexes
 * (32 bytes per reference, ~4 references per referenced chunk). When the
 * filesystem under --dir has less, the size is skipped with a record that
 * says so instead of failing half-way through the generation. */
static bool disk_allows(const bench_opts *b, unsigned long long n, outbuf *o, const char *label) {
  struct statvfs sv;
  if (statvfs(b->dir, &sv) != 0) return true;
  double need_b = (double)n * 4096 * 1.1 + 65536.0 * 4096 + (double)n * 2 * 32 + (1u << 30);
  double need_i = (double)n * 1.05 + 65536 + 10000;
  double free_b = (double)sv.f_bavail * (double)sv.f_frsize, free_i = (double)sv.f_favail;
  if (free_b >= need_b && free_i >= need_i) return true;
  char name[96], note[256];
  snprintf(name, sizeof name, "GC wall time, %s chunks", label);
  snprintf(note, sizeof note,
           "skipped: needs ~%.1f GiB and %.1fM inodes under %s, which has %.1f GiB and %.1fM "
           "free",
           need_b / (1u << 30), need_i / 1e6, b->dir, free_b / (1u << 30), free_i / 1e6);
  fprintf(stderr, "== %s chunks: %s\n", label, note);
  br_rec r = BR_REC(FIG, name, NAN, "s");
  r.runs = 0;
  r.note = note;
  br_emit(&o->json, &r);
  return false;
}

static int bench_size(const bench_opts *b, unsigned long long n, outbuf *o) {
  char label[32], store[PATH_MAX];
  size_label(n, label, sizeof label);
  snprintf(store, sizeof store, "%s/store-%s", b->dir, label);
  rm_rf(store);
  if (!disk_allows(b, n, o, label)) return 0;
  fprintf(stderr, "== %s chunks: generating %s\n", label, store);
  char nbuf[32], sbuf[32];
  snprintf(nbuf, sizeof nbuf, "%llu", n);
  snprintf(sbuf, sizeof sbuf, "%llu", b->seed);
  char *gargv[] = {(char *)b->gen, "-n", nbuf, "--seed", sbuf, store, NULL};
  proc_result gen;
  if (run(gargv, &gen) < 0) return -1;
  double gen_s = (double)gen.wall_ns / 1e9;
  fprintf(stderr, "   generated in %.1f s: %s", gen_s, gen.out);

  impl_stats ck = {.syscalls = -1}, fl = {.syscalls = -1};
  series reset_s = {0};
  char *ckargv[] = {(char *)b->self, "--child-gc", store, NULL};
  char *flargv[] = {(char *)b->floor_bin, store, NULL};
  /* The first reset after generation writes nothing (nothing is missing);
   * it is not counted in reset_s. */
  series first = {0};
  long long garbage = (long long)(n - n / 2);
  for (int i = 0; i < 2 * b->runs; i++) {
    int is_ck = i % 2 == 0;
    if (reset_store(b, store, n, i == 0 ? 0 : garbage, i == 0 ? &first : &reset_s) < 0) return -1;
    proc_result pr;
    if (run(is_ck ? ckargv : flargv, &pr) < 0) return -1;
    if (check(is_ck ? "chunklock" : "floor", &pr, n) < 0) return -1;
    record(is_ck ? &ck : &fl, &pr);
    fprintf(stderr, "   run %d %-9s %7.2f s  user %.2f sys %.2f rss %.0f MiB\n", i / 2 + 1,
            is_ck ? "chunklock" : "floor", (double)pr.wall_ns / 1e9, tv_s(pr.ru.ru_utime),
            tv_s(pr.ru.ru_stime), (double)pr.ru.ru_maxrss / 1024.0);
  }
  bool traced = false;
  if (n <= b->strace_max && access("/usr/bin/strace", X_OK) == 0) {
    for (int i = 0; i < 2; i++) {
      if (reset_store(b, store, n, garbage, &reset_s) < 0) return -1;
      strace_run(b, i == 0 ? ckargv : flargv, i == 0 ? &ck : &fl, store);
    }
    traced = ck.syscalls >= 0 && fl.syscalls >= 0;
  }
  if (!b->keep) rm_rf(store);

  char name[160], note[512];
  double x = (double)n;
#define NAME(what) (snprintf(name, sizeof name, "GC %s, %s chunks", what, label), name)
  double ratio = med(&ck.wall) / med(&fl.wall);
  snprintf(note, sizeof note,
           "chunklock: ckl_gc_run, 2 sweep threads; floor: bench/gc_floor.c, 1 thread, no "
           "locks/LMDB/rename-then-verify; min %.2f s vs %.2f s%s",
           smin(&ck.wall), smin(&fl.wall),
           ratio > 1.0 ? "; MISSED: the sweep's rename + re-stat per garbage chunk (the "
                         "protocol, DESIGN.md section 5) costs kernel CPU the floor does not "
                         "spend; see docs/benchmarks.md"
                       : "");
  emit_vs(o, NAME("wall time"), "s", &ck.wall, &fl.wall, 1.0, note, x, "chunklock");
  emit_vs(o, NAME("floor wall time"), "s", &fl.wall, NULL, NAN, NULL, x, "floor");
  emit_vs(o, NAME("mark phase wall"), "s", &ck.mark, &fl.mark, NAN, NULL, NAN, NULL);
  emit_vs(o, NAME("sweep phase wall"), "s", &ck.sweep, &fl.sweep, NAN, NULL, NAN, NULL);
  emit_vs(o, NAME("purge + status wall"), "s", &ck.purge, NULL, NAN, NULL, NAN, NULL);
  emit_vs(o, NAME("user CPU"), "s", &ck.user, &fl.user, NAN, NULL, NAN, NULL);
  emit_vs(o, NAME("sys CPU"), "s", &ck.sys, &fl.sys, NAN, NULL, NAN, NULL);
  {
    br_rec r = BR_REC(FIG, NAME("peak RSS"), smax(&ck.rss), "MiB");
    r.min = smin(&ck.rss);
    r.max = smax(&ck.rss);
    r.runs = ck.rss.n;
    if (n == 1000000) {
      r.target = 256;
      r.cmp = "<=";
    }
    char rn[128];
    snprintf(rn, sizeof rn, "value is the max over runs; the floor program peaks at %.1f MiB",
             smax(&fl.rss));
    r.note = rn;
    br_emit(&o->json, &r);
  }
  if (traced) {
    br_rec r = BR_REC(FIG, NAME("syscalls (strace -c -f)"), (double)ck.syscalls, "calls");
    r.floor = (double)fl.syscalls;
    char sn[512 + 512 + 64];
    snprintf(sn, sizeof sn, "chunklock: %s; floor: %s", ck.top, fl.top);
    r.note = sn;
    br_emit(&o->json, &r);
  }
  {
    br_rec r = BR_REC(FIG, NAME("store generation"), gen_s, "s");
    br_emit(&o->json, &r);
  }
#undef NAME

  FILE *m = o->md;
  if (m) {
    fprintf(m, "\n### %s chunks (%llu referenced, %llu garbage), %d runs each\n\n", label, n / 2,
            n - n / 2, b->runs);
    fprintf(m, "| | chunklock | floor | ratio |\n|---|---|---|---|\n");
    md_row(m, "wall, median (s)", med(&ck.wall), med(&fl.wall), 2);
    md_row(m, "wall, min (s)", smin(&ck.wall), smin(&fl.wall), 2);
    md_row(m, "wall, max (s)", smax(&ck.wall), smax(&fl.wall), 2);
    md_row(m, "user, median (s)", med(&ck.user), med(&fl.user), 2);
    md_row(m, "sys, median (s)", med(&ck.sys), med(&fl.sys), 2);
    md_row(m, "mark, median (s)", med(&ck.mark), med(&fl.mark), 2);
    md_row(m, "sweep, median (s)", med(&ck.sweep), med(&fl.sweep), 2);
    md_row(m, "purge + status, median (s)", med(&ck.purge), -1, 3);
    md_row(m, "peak RSS, max (MiB)", smax(&ck.rss), smax(&fl.rss), 1);
    if (traced) md_row(m, "syscalls (strace -c -f)", (double)ck.syscalls, (double)fl.syscalls, 0);
    fprintf(m, "\nWall time is target 1.0x the floor: %s (%.2fx). Peak RSS target <= 256 MiB "
            "at 1M: %.1f MiB.\n",
            med(&ck.wall) <= 1.0 * med(&fl.wall) ? "met" : "MISSED", med(&ck.wall) / med(&fl.wall),
            smax(&ck.rss));
    if (traced)
      fprintf(m, "\nBusiest syscalls, chunklock: %s.  \nBusiest syscalls, floor: %s.\n", ck.top,
              fl.top);
    fprintf(m, "\nStore generated in %.1f s; reset between runs (median) %.1f s.\n", gen_s,
            med(&reset_s));
    fflush(m);
  }
  return 0;
}

static void usage(void) {
  fputs("usage: gc_bench [--sizes 100k,1M] [--runs 5] [--dir DIR] [--seed S] [--json FILE]\n"
        "                [--md FILE] [--strace-max N] [--cold] [--keep] [--quick]\n"
        "       gc_bench --child-gc STORE\n"
        "Default sizes 100k,250k,500k,1M (4M when asked and the disk allows it);\n"
        "--quick: 20k chunks, 1 run, no strace.\n",
        stderr);
}

static void sibling(const char *self, const char *name, char *out) {
  snprintf(out, PATH_MAX, "%s", self);
  char *slash = strrchr(out, '/');
  snprintf(slash + 1, PATH_MAX - (size_t)(slash + 1 - out), "%s", name);
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "--child-gc")) return child_gc(argv[2]);
  bench_opts b = {.runs = 5, .seed = 1, .strace_max = 100000, .dir = "/var/tmp/ckl-bench"};
  const char *sizes = "100k,250k,500k,1M";
  int quick = 0, runs_set = 0, sizes_set = 0;
  static const struct option lo[] = {
      {"sizes", required_argument, NULL, 'n'}, {"runs", required_argument, NULL, 'r'},
      {"dir", required_argument, NULL, 'd'},   {"seed", required_argument, NULL, 's'},
      {"json", required_argument, NULL, 'j'},  {"md", required_argument, NULL, 'm'},
      {"strace-max", required_argument, NULL, 't'}, {"cold", no_argument, NULL, 'c'},
      {"keep", no_argument, NULL, 'k'},        {"quick", no_argument, NULL, 'q'},
      {0}};
  int c;
  while ((c = getopt_long(argc, argv, "n:r:d:s:j:m:t:ckq", lo, NULL)) != -1) {
    switch (c) {
    case 'n': sizes = optarg; sizes_set = 1; break;
    case 'r': b.runs = atoi(optarg); runs_set = 1; break;
    case 'd': b.dir = optarg; break;
    case 's': b.seed = strtoull(optarg, NULL, 10); break;
    case 'j': b.json_path = optarg; break;
    case 'm': b.md_path = optarg; break;
    case 't': b.strace_max = parse_count(optarg); break;
    case 'c': b.cold = 1; break;
    case 'k': b.keep = 1; break;
    case 'q': quick = 1; break;
    default: usage(); return 2;
    }
  }
  if (quick) {
    /* A smoke run: a small store, one run of each, no strace. */
    if (!sizes_set) sizes = "20k";
    if (!runs_set) b.runs = 1;
    b.strace_max = 0;
  }
  if (optind != argc || b.runs < 1 || b.runs > MAX_RUNS / 2) {
    usage();
    return 2;
  }
  char *list = strdup(sizes);
  for (char *tok = strtok(list, ","); tok && b.nsizes < MAX_SIZES; tok = strtok(NULL, ","))
    b.sizes[b.nsizes++] = parse_count(tok);
  free(list);
  ssize_t l = readlink("/proc/self/exe", b.self, sizeof b.self - 1);
  if (l <= 0) return 1;
  b.self[l] = '\0';
  sibling(b.self, "gen_store", b.gen);
  sibling(b.self, "gc_floor", b.floor_bin);
  if (mkdir(b.dir, 0755) != 0 && errno != EEXIST) {
    fprintf(stderr, "gc_bench: mkdir %s: %s\n", b.dir, strerror(errno));
    return 1;
  }
  outbuf o = {0};
  if (!br_open(&o.json, b.json_path)) {
    fprintf(stderr, "gc_bench: %s: %s\n", b.json_path, strerror(errno));
    return 1;
  }
  o.md = b.md_path ? fopen(b.md_path, "we") : stdout;
  if (!o.md) return 1;
  struct utsname u;
  uname(&u);
  char cpu[256] = "?";
  FILE *ci = fopen("/proc/cpuinfo", "re");
  char line[512];
  while (ci && fgets(line, sizeof line, ci))
    if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
      snprintf(cpu, sizeof cpu, "%s", strchr(line, ':') + 2);
      cpu[strcspn(cpu, "\n")] = '\0';
      break;
    }
  if (ci) fclose(ci);
  fprintf(o.md, "Machine: %ld cores (%s), kernel %s; stores in %s: %s; cache: %s.\n",
          sysconf(_SC_NPROCESSORS_ONLN), cpu, u.release, b.dir, fs_type(b.dir),
          b.cold ? "dropped before each run" : "warm (the store fits in RAM)");
  int rc = 0;
  for (int i = 0; rc == 0 && i < b.nsizes; i++) rc = bench_size(&b, b.sizes[i], &o);
  if (br_close(&o.json) != 0) rc = -1;
  if (o.md != stdout) fclose(o.md);
  return rc == 0 ? 0 : 1;
}

/* tools/cli_util.c - what every command shares: messages and exit codes,
 * argument parsing, opening the store, JSON output, progress on stderr. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tools/cli.h"

static const char *command = "";

void cli_set_command(const char *name) { command = name ? name : ""; }
const char *cli_command_name(void) { return command; }

__attribute__((format(printf, 1, 0))) static void vmsg(const char *fmt, va_list ap) {
  fprintf(stderr, "chunklock%s%s: ", command[0] ? " " : "", command);
  vfprintf(stderr, fmt, ap);
}

void cli_msg(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vmsg(fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

int cli_exit_code(int rc) {
  if (rc >= 0) return CLI_EXIT_OK;
  if (rc == CKL_EBUSY || rc == CKL_ETIMEDOUT) return CLI_EXIT_BUSY;
  return CLI_EXIT_FAILED;
}

int cli_fail(int rc, const ckl_holder *who, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vmsg(fmt, ap);
  va_end(ap);
  fprintf(stderr, ": %s (%s)", ckl_strerror(rc), ckl_err_name(rc));
  if (rc == CKL_EBUSY || rc == CKL_ETIMEDOUT) {
    if (who && who->known) {
      char buf[512];
      ckl_holder_format(who, buf, sizeof buf);
      fprintf(stderr, ": held by %s", buf);
    } else if (who && who->target[0]) {
      fprintf(stderr, ": %s is held by a holder that cannot be named", who->target);
    }
  }
  fputc('\n', stderr);
  cli_flush_held("  cause: ");
  return cli_exit_code(rc);
}

int cli_usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vmsg(fmt, ap);
  va_end(ap);
  fprintf(stderr, "\ntry 'chunklock %s --help'\n", command[0] ? command : "");
  return CLI_EXIT_USAGE;
}

/* ---- arguments ------------------------------------------------------------- */

char *cli_optarg;
int cli_optind;
static char **parsing;

int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts) {
  if (parsing != argv) {
    parsing = argv;
    optind = 0; /* GNU: full re-initialisation */
  }
  opterr = 0;
  char so[64];
  /* a leading ':' makes a missing argument ':' rather than '?' */
  snprintf(so, sizeof so, ":%s", shortopts ? shortopts : "");
  int prev = optind ? optind : 1;
  int c = getopt_long(argc, argv, so, longopts, NULL);
  cli_optarg = optarg;
  cli_optind = optind;
  if (c == '?' || c == ':') {
    const char *bad = prev < argc ? argv[prev] : "?";
    if (c == ':') cli_usage_error("option '%s' needs an argument", bad);
    else cli_usage_error("unknown option '%s'", bad);
    return -2;
  }
  return c;
}

int cli_getopt_json_only(int argc, char **argv, const char *usage, int *json) {
  enum { OPT_JSON = 1 };
  static const struct option lo[] = {{"json", no_argument, NULL, OPT_JSON},
                                     {"help", no_argument, NULL, 'h'},
                                     {0}};
  int c;
  *json = 0;
  while ((c = cli_getopt(argc, argv, "h", lo)) != -1) {
    if (c == -2) return CLI_EXIT_USAGE;
    if (c == 'h') {
      fputs(usage, stdout);
      return CLI_EXIT_OK;
    }
    if (c == OPT_JSON) *json = 1;
  }
  return -1;
}

int cli_parse_uint(const char *opt, const char *s, uint64_t max, uint64_t *out) {
  char *end;
  errno = 0;
  if (!s || !*s || *s == '-' || *s == '+') goto bad;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || v > max) goto bad;
  *out = v;
  return 0;
bad:
  cli_usage_error("%s: '%s' is not a whole number in [0, %" PRIu64 "]", opt, s ? s : "", max);
  return -1;
}

int cli_parse_seconds_ms(const char *opt, const char *s, int64_t *ms) {
  char *end;
  errno = 0;
  double v = s && *s && *s != '-' ? strtod(s, &end) : -1;
  if (!s || !(v >= 0 && v <= 31536000.0 * 100) || errno || *end) {
    cli_usage_error("%s: '%s' is not a number of seconds", opt, s ? s : "");
    return -1;
  }
  *ms = (int64_t)(v * 1000.0 + 0.5);
  return 0;
}

int cli_parse_size(const char *opt, const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  if (!s || !*s || *s == '-' || *s == '+') goto bad;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno) goto bad;
  unsigned shift = 0;
  if (*end == 'K' || *end == 'k') shift = 10;
  else if (*end == 'M' || *end == 'm') shift = 20;
  else if (*end == 'G' || *end == 'g') shift = 30;
  if (shift) {
    end++;
    if (*end == 'i' && end[1] == 'B') end += 2;
  }
  if (*end || v > (UINT64_MAX >> shift)) goto bad;
  *out = (uint64_t)v << shift;
  return 0;
bad:
  cli_usage_error("%s: '%s' is not a size (e.g. 65536, 64K, 1M)", opt, s ? s : "");
  return -1;
}

int cli_parse_snapshot(const char *s, ckl_snapshot_name *out) {
  if (ckl_snapshot_name_parse(s, out) == 0) return 0;
  cli_usage_error("'%s' is not a snapshot name TYPE/ID/YYYY-MM-DDTHH:MM:SSZ", s ? s : "");
  return -1;
}

int cli_parse_group(const char *s, ckl_group_name *out) {
  if (ckl_group_name_parse(s, out) == 0) return 0;
  cli_usage_error("'%s' is not a group name TYPE/ID (type [a-z0-9-], id [A-Za-z0-9_.-])",
                  s ? s : "");
  return -1;
}

/* ---- store and log ------------------------------------------------------------ */

int cli_open_store(const char *path, ckl_store **out) {
  int rc = ckl_store_open(path, NULL, out);
  if (rc == 0) return CLI_EXIT_OK;
  if (rc == CKL_ENOTSTORE || rc == -ENOENT)
    return cli_fail(rc, NULL, "%s is not a chunklock store (create one with 'chunklock init')",
                    path);
  return cli_fail(rc, NULL, "cannot open store %s", path);
}

/* Library errors are held back and printed by cli_fail as the cause of
 * the failure it reports (one message, not two saying the same thing);
 * whatever no cli_fail consumed is printed when the command ends. With
 * CHUNKLOCK_LOG set, everything is printed as it comes. */
#define HELD_MAX 4
static pthread_mutex_t held_mu = PTHREAD_MUTEX_INITIALIZER;
static char held[HELD_MAX][512];
static int nheld;
static bool hold_errors;

static void log_to_stderr(ckl_log_level level, const char *msg, void *arg) {
  (void)arg;
  if (hold_errors && level == CKL_LOG_ERROR) {
    pthread_mutex_lock(&held_mu);
    if (nheld == HELD_MAX) {
      memmove(held[0], held[1], sizeof held[0] * (HELD_MAX - 1));
      nheld--;
    }
    snprintf(held[nheld++], sizeof held[0], "%s", msg);
    pthread_mutex_unlock(&held_mu);
    return;
  }
  /* One fprintf per message: stdio locks the stream, so lines from
   * several threads never interleave. */
  fprintf(stderr, "chunklock%s%s: %s: %s\n", command[0] ? " " : "", command,
          ckl_log_level_name(level), msg);
}

void cli_flush_held(const char *prefix) {
  pthread_mutex_lock(&held_mu);
  for (int i = 0; i < nheld; i++) fprintf(stderr, "%s%s\n", prefix, held[i]);
  nheld = 0;
  pthread_mutex_unlock(&held_mu);
}

void cli_log_init(void) {
  ckl_log_level max = CKL_LOG_WARN;
  const char *e = getenv("CHUNKLOCK_LOG");
  hold_errors = !e;
  if (e) {
    if (!strcmp(e, "error")) max = CKL_LOG_ERROR;
    else if (!strcmp(e, "info")) max = CKL_LOG_INFO;
    else if (!strcmp(e, "debug")) max = CKL_LOG_DEBUG;
    else if (!strcmp(e, "off") || !strcmp(e, "none")) {
      ckl_log_set(NULL, NULL, CKL_LOG_ERROR);
      return;
    }
  }
  ckl_log_set(log_to_stderr, NULL, max);
}

/* ---- output -------------------------------------------------------------------- */

void cli_json_print(json_t *doc) {
  if (!doc) {
    cli_msg("out of memory building the JSON output");
    return;
  }
  json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
  fputc('\n', stdout);
  fflush(stdout);
  json_decref(doc);
}

void cli_json_set(json_t *obj, const char *key, json_t *v) {
  json_object_set_new(obj, key, v ? v : json_null());
}

void cli_format_time(int64_t ns, char *buf, size_t len) {
  if (ns == 0) {
    snprintf(buf, len, "-");
    return;
  }
  time_t t = (time_t)(ns / 1000000000LL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

json_t *cli_json_time(int64_t ns) {
  if (ns == 0) return json_null();
  char buf[32];
  cli_format_time(ns, buf, sizeof buf);
  return json_string(buf);
}

json_t *cli_json_holder(const ckl_holder *h) {
  if (!h || !h->known) return json_null();
  json_t *o = json_object();
  cli_json_set(o, "operation", json_string(h->operation));
  cli_json_set(o, "pid", json_integer(h->pid));
  cli_json_set(o, "host", json_string(h->host));
  cli_json_set(o, "since", cli_json_time(h->since_ns));
  cli_json_set(o, "target", json_string(h->target));
  return o;
}

void cli_format_bytes(uint64_t v, char *buf, size_t len) {
  static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double d = (double)v;
  int u = 0;
  while (d >= 1024.0 && u < 5) {
    d /= 1024.0;
    u++;
  }
  if (u == 0) snprintf(buf, len, "%" PRIu64 " B", v);
  else snprintf(buf, len, "%.1f %s", d, units[u]);
}

int64_t cli_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t cli_wall_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- progress ---------------------------------------------------------------- */

#define REDRAW_NS 100000000LL /* 10 per second */

static void draw(cli_progress *p, bool force) {
  int64_t now = cli_now_ns();
  if (!force && now - p->last_ns < REDRAW_NS) return;
  p->last_ns = now;
  double secs = (double)(now - p->start_ns) / 1e9;
  char line[256];
  int n;
  if (p->total) {
    int width = 24;
    uint64_t done = p->done > p->total ? p->total : p->done;
    int fill = (int)((double)done / (double)p->total * width);
    char bar[32];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    n = snprintf(line, sizeof line, "%s [%s] %3d%% %.0fs %s", p->label, bar,
                 (int)((double)done * 100.0 / (double)p->total), secs, p->item);
  } else {
    static const char spin[] = "|/-\\";
    n = snprintf(line, sizeof line, "%s %c %.0fs %s", p->label, spin[p->spin++ & 3], secs,
                 p->item);
  }
  if (n < 0) return;
  /* Truncate to 79 columns so the line never wraps (\r would then redraw
   * only its last row). */
  if (n > 79) line[79] = '\0';
  fprintf(stderr, "\r\033[K%s", line);
  fflush(stderr);
}

void cli_progress_start(cli_progress *p, const char *label, uint64_t total) {
  memset(p, 0, sizeof *p);
  p->on = isatty(STDERR_FILENO) == 1;
  p->label = label;
  p->total = total;
  p->start_ns = cli_now_ns();
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
}

void cli_progress_update(cli_progress *p, uint64_t done, const char *item) {
  if (!p->on) return;
  pthread_mutex_lock(&p->mu);
  p->done = done;
  if (item) snprintf(p->item, sizeof p->item, "%s", item);
  draw(p, false);
  pthread_mutex_unlock(&p->mu);
}

void cli_progress_add(cli_progress *p, uint64_t delta) {
  if (!p->on) return;
  pthread_mutex_lock(&p->mu);
  p->done += delta;
  draw(p, false);
  pthread_mutex_unlock(&p->mu);
}

static void *ticker(void *arg) {
  cli_progress *p = arg;
  pthread_mutex_lock(&p->mu);
  while (!p->stop) {
    draw(p, true);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 200000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&p->cv, &p->mu, &ts);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

void cli_progress_tick_start(cli_progress *p) {
  if (!p->on || p->ticking) return;
  p->ticking = pthread_create(&p->ticker, NULL, ticker, p) == 0;
}

void cli_progress_end(cli_progress *p) {
  if (p->ticking) {
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->ticker, NULL);
    p->ticking = false;
  }
  if (p->on) {
    fprintf(stderr, "\r\033[K");
    fflush(stderr);
  }
  pthread_cond_destroy(&p->cv);
  pthread_mutex_destroy(&p->mu);
  p->on = false;
}

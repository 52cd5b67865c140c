/*
 * tools/cmd_demo.c - `chunklock demo [--dir DIR] [--seconds N]`.
 *
 * A temporary store, synthetic data that changes version by version, and on
 * ONE libuv loop (the runtime, chunklock/runtime.h) everything at once:
 * backups of three groups (two with content-defined chunking, one disk
 * image with fixed chunks), prunes, forgets, GCs, verifies, restores that
 * compare what they read with what was written, and a freeze (what
 * `with-lock --shared` takes) in the middle. A live view shows the tasks and
 * the lock holders (on a terminal; plain periodic lines otherwise). The
 * summary counts snapshots, chunks, the dedup factor, GC runs, bytes freed,
 * lock waits and the conflicts that resolved themselves, and ends with an
 * fsck: the exit status is 0 only if fsck is clean and nothing went wrong.
 *
 * Everything blocking runs on the runtime's worker threads: the loop only
 * schedules (timers) and collects results (done callbacks). The demo's
 * own state is touched only on the loop thread, except each task's job
 * struct, which its worker fills while the loop leaves it alone.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tools/cli.h"
#include "tools/demo.h"

static const char usage_text[] =
    "usage: chunklock demo [--dir DIR] [--seconds N] [--keep] [--json]\n\n"
    "Creates a temporary store under DIR (default /dev/shm, else $TMPDIR or\n"
    "/tmp), and for N seconds (default 20) runs concurrent backups, prunes,\n"
    "forgets, GCs, verifies and restores on one event loop, with a live view of\n"
    "tasks and locks. Ends with a summary and an fsck; exits 0 only if fsck is\n"
    "clean and every restore read back what was written. --keep leaves the store;\n"
    "--json prints the summary as JSON on stdout (the view goes to stderr).\n";

/* ---- synthetic data ------------------------------------------------------ */

uint64_t demo_rand(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t demo_fnv(uint64_t h, const void *p, size_t n) {
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}

/* Fill with text-like bytes: words from a small vocabulary, so zstd has
 * something to do and shifted copies still chunk alike. */
void demo_fill(uint8_t *b, size_t n, uint64_t seed) {
  static const char *words[] = {"chunk ", "lock ", "store ", "backup ", "gc ", "prune ",
                                "index ", "lease ", "atime ", "verify ", "\n", "snapshot "};
  size_t i = 0;
  while (i < n) {
    const char *w = words[demo_rand(&seed) % 12];
    for (; *w && i < n; w++) b[i++] = (uint8_t)*w;
    if (demo_rand(&seed) % 5 == 0)
      for (int k = 0; k < 8 && i < n; k++) b[i++] = (uint8_t)demo_rand(&seed);
  }
}

/* One version step: a few inserts, deletes and overwrites, and an append.
 * Inserts and deletes shift everything after them: content-defined
 * chunking keeps deduplicating past them, fixed chunks would not. */
void demo_mutate(demo_group *g) {
  uint64_t *s = &g->seed;
  int edits = 3 + (int)(demo_rand(s) % 4);
  for (int e = 0; e < edits; e++) {
    size_t at = g->len ? (size_t)(demo_rand(s) % g->len) : 0;
    size_t k = 1 + (size_t)(demo_rand(s) % 64);
    int kind = g->fixed ? 2 : (int)(demo_rand(s) % 3);
    if (kind == 0 && g->len + k <= g->cap) { /* insert */
      memmove(g->buf + at + k, g->buf + at, g->len - at);
      demo_fill(g->buf + at, k, demo_rand(s));
      g->len += k;
    } else if (kind == 1 && at + k <= g->len && g->len > k) { /* delete */
      memmove(g->buf + at, g->buf + at + k, g->len - at - k);
      g->len -= k;
    } else { /* overwrite */
      if (g->fixed) k = 4096, at -= at % 4096;
      if (at + k > g->len) k = g->len - at;
      demo_fill(g->buf + at, k, demo_rand(s));
    }
  }
  size_t add = g->fixed ? 0 : 4096 + (size_t)(demo_rand(s) % 8192);
  if (g->len + add > g->cap) add = g->cap - g->len;
  demo_fill(g->buf + g->len, add, demo_rand(s));
  g->len += add;
}

/* ---- the command ----------------------------------------------------------- */

static const char *default_dir(void) {
  struct stat sb;
  if (stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) && access("/dev/shm", W_OK) == 0)
    return "/dev/shm";
  const char *t = getenv("TMPDIR");
  return t && *t ? t : "/tmp";
}

int cli_cmd_demo(int argc, char **argv) {
  enum { OPT_DIR = 1, OPT_SECONDS, OPT_KEEP, OPT_JSON };
  static const struct option lo[] = {{"dir", required_argument, NULL, OPT_DIR},
                                     {"seconds", required_argument, NULL, OPT_SECONDS},
                                     {"keep", no_argument, NULL, OPT_KEEP},
                                     {"json", no_argument, NULL, OPT_JSON},
                                     {"help", no_argument, NULL, 'h'},
                                     {0}};
  const char *dir = NULL;
  uint64_t secs = 20;
  int keep = 0, json = 0, c;
  while ((c = cli_getopt(argc, argv, "h", lo)) != -1) {
    switch (c) {
    case -2: return CLI_EXIT_USAGE;
    case 'h': fputs(usage_text, stdout); return CLI_EXIT_OK;
    case OPT_DIR: dir = cli_optarg; break;
    case OPT_KEEP: keep = 1; break;
    case OPT_JSON: json = 1; break;
    case OPT_SECONDS:
      if (cli_parse_uint("--seconds", cli_optarg, 3600, &secs) < 0) return CLI_EXIT_USAGE;
      if (secs == 0) return cli_usage_error("--seconds must be at least 1");
      break;
    default: break;
    }
  }
  if (cli_optind < argc) return cli_usage_error("unexpected argument '%s'", argv[cli_optind]);
  if (!dir) dir = default_dir();
  char tmpl[4096];
  snprintf(tmpl, sizeof tmpl, "%s/chunklock-demo.XXXXXX", dir);
  if (!mkdtemp(tmpl)) return cli_fail(-errno, NULL, "cannot create a directory in %s", dir);
  demo d;
  memset(&d, 0, sizeof d);
  d.seconds = (int)secs;
  d.json = json;
  d.out = json ? stderr : stdout;
  d.tty = isatty(fileno(d.out)) == 1;
  snprintf(d.root, sizeof d.root, "%s", tmpl);
  snprintf(d.store_path, sizeof d.store_path, "%s/store", tmpl);
  int ec = demo_run(&d);
  if (keep) fprintf(d.out, "the store is kept at %s\n", d.store_path);
  else demo_remove_tree(d.root);
  return ec;
}

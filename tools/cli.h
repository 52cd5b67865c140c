/* tools/cli.h - shared declarations of the chunklock CLI. */
#ifndef CKL_TOOLS_CLI_H
#define CKL_TOOLS_CLI_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "chunklock/chunklock.h"

/* Exit codes: a contract for scripts (docs/chunklock.1). */
enum {
  CLI_EXIT_OK = 0,
  CLI_EXIT_FAILED = 1,
  CLI_EXIT_USAGE = 2,
  CLI_EXIT_BUSY = 3,
  CLI_EXIT_DAMAGE = 4
};

typedef struct cli_command {
  const char *name;
  const char *summary;
  int (*fn)(int argc, char **argv); /* argv[0] is the command name */
} cli_command;

int cli_cmd_init(int argc, char **argv);
int cli_cmd_backup(int argc, char **argv);
int cli_cmd_restore(int argc, char **argv);
int cli_cmd_list(int argc, char **argv);
int cli_cmd_forget(int argc, char **argv);
int cli_cmd_prune(int argc, char **argv);
int cli_cmd_gc(int argc, char **argv);
int cli_cmd_verify(int argc, char **argv);
int cli_cmd_fsck(int argc, char **argv);
int cli_cmd_status(int argc, char **argv);
int cli_cmd_locks(int argc, char **argv);
int cli_cmd_with_lock(int argc, char **argv);
int cli_cmd_demo(int argc, char **argv);
int cli_cmd_failpoints(int argc, char **argv);

/* ---- cli_util.c: messages ------------------------------------------------
 * Every message goes to stderr as "chunklock CMD: ...". cli_set_command
 * names the command (main does it before dispatching). */
void cli_set_command(const char *name);
const char *cli_command_name(void);
void cli_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Exit code for a library result: 0 -> 0, CKL_EBUSY / CKL_ETIMEDOUT -> 3
 * (busy), everything else -> 1. */
int cli_exit_code(int rc);

/* Print "chunklock CMD: <what>: <strerror(rc)> (<NAME>)" and, when rc is
 * busy and the holder is known, the holder on the same line; returns
 * cli_exit_code(rc). who may be NULL. */
int cli_fail(int rc, const ckl_holder *who, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A usage error: prints the message and "try 'chunklock CMD --help'";
 * returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- argument parsing ------------------------------------------------------
 * Each command parses with getopt_long (GNU argument permutation: options
 * may follow operands). cli_getopt wraps it: it resets getopt, turns off
 * its own messages and reports unknown options and missing arguments as
 * usage errors (returns -2 then; -1 at the end; else the option's val). */
struct option;
int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts);
/* Option parsing for commands whose only options are --json and --help:
 * returns -1 when the command should go on (*json set, cli_optind at the
 * first operand), else the exit code to return (usage printed for --help,
 * CLI_EXIT_USAGE for a bad option). */
int cli_getopt_json_only(int argc, char **argv, const char *usage, int *json);
extern char *cli_optarg;
extern int cli_optind;

/* Parse a non-negative integer / a number of seconds (decimals allowed,
 * "1.5") for option `opt`. 0, or prints a usage error and returns -1. */
int cli_parse_uint(const char *opt, const char *s, uint64_t max, uint64_t *out);
int cli_parse_seconds_ms(const char *opt, const char *s, int64_t *ms);
/* A size with an optional K/M/G suffix (powers of 1024). */
int cli_parse_size(const char *opt, const char *s, uint64_t *out);

int cli_parse_snapshot(const char *s, ckl_snapshot_name *out);
int cli_parse_group(const char *s, ckl_group_name *out);

/* ---- the store ---------------------------------------------------------------
 * Open a store, printing why not. Returns the exit code (0 and *out). */
int cli_open_store(const char *path, ckl_store **out);

/* Route the library's log to stderr: warnings and errors by default,
 * CHUNKLOCK_LOG=error|warn|info|debug to change it. */
void cli_log_init(void);
/* Print the library errors held back so far, each after prefix. */
void cli_flush_held(const char *prefix);

/* ---- output ---------------------------------------------------------------
 * --json: one document on stdout (2-space indent, sorted keys). */
void cli_json_print(json_t *doc); /* steals the reference */
/* json helpers that never fail the caller: a NULL value becomes null */
void cli_json_set(json_t *obj, const char *key, json_t *v);
json_t *cli_json_time(int64_t realtime_ns); /* RFC 3339 UTC string, or null for 0 */
json_t *cli_json_holder(const ckl_holder *h);
/* RFC 3339 UTC into buf (>= 21 bytes); "-" for 0. */
void cli_format_time(int64_t realtime_ns, char *buf, size_t len);
/* "1.5 MiB" into buf. */
void cli_format_bytes(uint64_t v, char *buf, size_t len);

/* ---- progress on stderr, only when stderr is a terminal ---------------------
 * A bar when the total is known, a spinner with elapsed time otherwise. At
 * most ~10 redraws a second; cli_progress_end erases the line. Thread-safe:
 * update may be called from any thread. */
typedef struct cli_progress {
  bool on;
  const char *label;
  uint64_t total, done;
  char item[96];
  int64_t start_ns, last_ns;
  int spin;
  pthread_mutex_t mu;
  pthread_t ticker;   /* spinner thread for work without callbacks */
  bool ticking, stop;
  pthread_cond_t cv;
} cli_progress;
void cli_progress_start(cli_progress *p, const char *label, uint64_t total);
void cli_progress_update(cli_progress *p, uint64_t done, const char *item);
void cli_progress_add(cli_progress *p, uint64_t delta);
/* Redraw on a timer while the caller blocks in a call without progress
 * callbacks (GC, fsck). */
void cli_progress_tick_start(cli_progress *p);
void cli_progress_end(cli_progress *p);

/* ---- cmd_status.c: what `status` and the demo's summary report ------------ */
typedef struct cli_stats {
  uint64_t groups, snapshots, in_progress, archives;
  uint64_t logical_bytes;                  /* sum of archive sizes */
  uint64_t chunks, stored_bytes, plain_bytes;
  uint64_t bad_chunks, unreadable_chunks;
  double dedup_factor;       /* logical / plain (unique) bytes */
  double compression_factor; /* plain / stored bytes */
} cli_stats;
/* Walk .chunks (every chunk header) and every complete snapshot's index
 * headers. p (optional) counts the 65,536 prefix directories. 0 or -errno. */
int cli_store_stats(ckl_store *st, cli_stats *out, cli_progress *p);

/* Monotonic / wall clock in ns. */
int64_t cli_now_ns(void);
int64_t cli_wall_ns(void);

#endif

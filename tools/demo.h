/*
 * tools/demo.h - the pieces of `chunklock demo` (cmd_demo.c: the command
 * and the synthetic data; demo.c: the tasks on the loop; demo_view.c: the
 * live view and the summary).
 *
 * Threads: the demo struct and the job list are the loop thread's. A job's
 * fields marked "worker" are written by the runtime worker that runs the
 * job's custom task (or read callback) and read by the loop only in the
 * job's done callback, after the runtime has handed the result over.
 */
#ifndef CKL_TOOLS_DEMO_H
#define CKL_TOOLS_DEMO_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "chunklock/chunklock.h"

#define DEMO_GROUPS 3

typedef struct demo demo;

typedef struct demo_group {
  const char *label;       /* "host/web" */
  ckl_group_name name;
  bool fixed;              /* disk image: fixed 64 KiB chunks (ckl_task_backup) */
  uint8_t *buf;            /* the current version; the worker of this group's
                              backup owns it while `busy` */
  size_t len, cap;
  uint64_t seed;
  bool mutate;             /* make the next version before the next backup */
  bool busy;               /* a backup task is in flight */
  bool retrying;           /* the last attempt was busy: this one retries */
  int64_t next_start_ns;   /* when to start the next backup */
  int64_t next_time_s;     /* virtual snapshot time of the next backup */
} demo_group;

typedef struct demo_snap {
  ckl_snapshot_name name;
  int group;
  uint64_t fnv, size;      /* of the archive as written */
  bool gone;               /* pruned or forgotten */
  int readers;             /* verify/read tasks in flight on it */
} demo_snap;

typedef struct demo_job {
  demo *d;
  ckl_task task;
  struct demo_job *next;
  char label[64];
  char phase[16];
  uint64_t done, total;
  bool waited;             /* met a busy lock and waited on the loop */
  char waiting_for[96];
  int group, snap;         /* backup/prune: group; verify/read/forget: snap */
  bool finished;           /* done_cb ran: free it on the next tick */
  /* worker */
  ckl_snapshot_name made;
  bool made_ok;
  int64_t time_s;
  uint64_t fnv, size, off;
  ckl_holder who;
  char *text;              /* roster listing */
  ckl_task_archive ar;
} demo_job;

struct demo {
  int seconds;
  bool tty;                /* the view's stream is a terminal: redraw in place */
  bool json;               /* summary as JSON on stdout; the view on stderr */
  FILE *out;               /* the view's stream */
  char root[4096];
  char store_path[4200];
  ckl_store *st;
  ckl_runtime *rt;
  uv_loop_t loop;
  uv_timer_t tick;
  int64_t start_ns, end_ns;
  bool stopping, closed;
  demo_group groups[DEMO_GROUPS];
  demo_snap *snaps;
  size_t nsnaps, capsnaps;
  demo_job *jobs;          /* in flight, and finished ones not yet freed */
  int64_t next_gc, next_prune, next_verify, next_read, next_forget, next_locks, next_view;
  bool gc_busy, prune_busy, forget_busy, locks_busy, freeze_started;
  int verifies_busy, reads_busy;
  char locks_text[4096];
  int view_lines;
  /* counts */
  unsigned backups, backup_retries, prunes, pruned, forgets, forgot, gc_runs;
  uint64_t gc_removed_chunks, gc_removed_bytes;
  unsigned verifies, reads, reads_matched, lock_waits, resolved, gave_up, gone;
  unsigned freezes;
  unsigned failures;
};

/* cmd_demo.c */
uint64_t demo_rand(uint64_t *state);
uint64_t demo_fnv(uint64_t h, const void *p, size_t n);
#define DEMO_FNV_INIT 0xcbf29ce484222325ull
void demo_mutate(demo_group *g);
/* Text-like bytes (words and some noise), deterministic in seed. */
void demo_fill(uint8_t *b, size_t n, uint64_t seed);

/* demo.c: create the store and the data, run the loop, summarize.
 * Returns the exit code. */
int demo_run(demo *d);
void demo_remove_tree(const char *path);

/* demo_view.c */
void demo_view(demo *d, bool final);
void demo_event(demo *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int demo_summary(demo *d);

#endif

/*
 * examples/server-loop.c - a backup server's event loop running chunklock
 * tasks: concurrent backups (two of them into the same group, so one
 * waits for the other's group lock), a garbage collection and a prune, all
 * on one libuv loop that never blocks. It prints what happened and exits
 * non-zero if anything went wrong.
 *
 *     server-loop [PARENT_DIR]     (default /tmp; a fresh store is made
 *                                   in a temporary directory there and
 *                                   removed at the end)
 *
 * Uses the public API only: <chunklock/chunklock.h> and libuv.
 */
#include <chunklock/chunklock.h>

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define ARCHIVE_SIZE (1u << 20)
#define CHUNK_SIZE (64u * 1024)

typedef struct job {
  const char *label;
  ckl_task task;
  int status;
  int finished;
  const char *last_phase;
  unsigned char *data;
} job;

static int failures;

static void on_progress(ckl_task *t, const ckl_task_progress *p) {
  job *j = t->data;
  if (strcmp(p->phase, "wait") == 0) {
    if (j->last_phase && strcmp(j->last_phase, "wait") == 0) return;
    char who[256];
    ckl_holder_format(p->waiting_for, who, sizeof who);
    printf("%-12s waits: held by %s\n", j->label, who);
  } else if (!j->last_phase || strcmp(j->last_phase, p->phase) != 0) {
    printf("%-12s %s", j->label, p->phase);
    if (p->total) printf(" %llu/%llu", (unsigned long long)p->done, (unsigned long long)p->total);
    printf("\n");
  }
  j->last_phase = p->phase;
}

static void on_done(ckl_task *t, int status) {
  job *j = t->data;
  j->status = status;
  j->finished = 1;
  if (status < 0) {
    printf("%-12s FAILED: %s (%s)\n", j->label, ckl_strerror(status), ckl_err_name(status));
    if (t->holder.known) {
      char who[256];
      ckl_holder_format(&t->holder, who, sizeof who);
      printf("%-12s   in the way: %s\n", j->label, who);
    }
    failures++;
    return;
  }
  switch (t->type) {
  case CKL_TASK_BACKUP: {
    const ckl_snapshot_name *n = ckl_task_backup_snapshot(t);
    printf("%-12s done: snapshot %s/%s/%s (%d lock attempt%s)\n", j->label, n->type, n->id,
           n->time, t->attempts, t->attempts == 1 ? "" : "s");
    break;
  }
  case CKL_TASK_GC: {
    const ckl_gc_result *r = ckl_task_gc_result(t);
    printf("%-12s done: %llu chunks referenced, %llu removed (%llu bytes)\n", j->label,
           (unsigned long long)r->referenced_chunks, (unsigned long long)r->removed_chunks,
           (unsigned long long)r->removed_bytes);
    break;
  }
  case CKL_TASK_PRUNE: {
    size_t n = 0;
    const ckl_prune_item *it = ckl_task_prune_items(t, &n);
    printf("%-12s done: %zu snapshot%s considered\n", j->label, n, n == 1 ? "" : "s");
    for (size_t i = 0; i < n; i++)
      printf("%-12s   %s %s (%s)\n", "", it[i].name.time, it[i].keep ? "kept" : "removed",
             ckl_prune_reason_name(it[i].reason));
    break;
  }
  default:
    printf("%-12s done\n", j->label);
  }
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

static int submit_backup(ckl_runtime *rt, ckl_store *st, job *j, const char *group,
                         int64_t time_s, unsigned seed) {
  j->data = malloc(ARCHIVE_SIZE);
  if (!j->data) return -ENOMEM;
  fill(j->data, ARCHIVE_SIZE, seed);
  ckl_task_archive ar = {.name = "root.fidx", .chunk_size = CHUNK_SIZE, .data = j->data,
                         .size = ARCHIVE_SIZE};
  ckl_task_backup_args a = {.store = st, .narchives = 1, .archives = &ar, .timeout_ms = 30000};
  a.opts.time_s = time_s;
  int rc = ckl_group_name_parse(group, &a.group);
  if (rc < 0) return rc;
  j->task.data = j;
  return ckl_task_backup(rt, &j->task, &a, on_progress, on_done);
}

/* rm -rf of the demo's own temporary directory (no symlink is followed). */
static void remove_tree(int parent_fd, const char *name) {
  int fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd >= 0) {
    DIR *d = fdopendir(fd);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
      if (unlinkat(fd, e->d_name, 0) != 0) remove_tree(fd, e->d_name);
    }
    if (d) closedir(d);
    else close(fd);
  }
  unlinkat(parent_fd, name, AT_REMOVEDIR);
}

static int run(const char *store_path) {
  ckl_store_create_opts co = {.set = CKL_STORE_SET_ATIME_SAFETY | CKL_STORE_SET_MARGIN,
                              .sync = CKL_SYNC_NONE, /* a demo on a temp dir */
                              .gc_atime_safety_s = 0, .gc_margin_s = 1};
  int rc = ckl_store_create(store_path, &co);
  ckl_store *st = NULL;
  if (rc == 0) rc = ckl_store_open(store_path, NULL, &st);
  if (rc < 0) {
    fprintf(stderr, "store %s: %s\n", store_path, ckl_strerror(rc));
    return 1;
  }
  uv_loop_t loop;
  uv_loop_init(&loop);
  ckl_runtime_opts ro = {.loop = &loop, .progress_interval_ms = 100};
  ckl_runtime *rt = NULL;
  if ((rc = ckl_runtime_new(&ro, &rt)) < 0) {
    fprintf(stderr, "runtime: %s\n", ckl_strerror(rc));
    ckl_store_close(st);
    return 1;
  }
  int64_t now = (int64_t)time(NULL);
  job web = {.label = "backup web"}, db = {.label = "backup db"};
  job vm1 = {.label = "backup vm#1"}, vm2 = {.label = "backup vm#2"};
  job gc = {.label = "gc"}, prune = {.label = "prune vm"};
  if ((rc = submit_backup(rt, st, &web, "host/web", now, 1)) < 0 ||
      (rc = submit_backup(rt, st, &db, "host/db", now, 2)) < 0 ||
      (rc = submit_backup(rt, st, &vm1, "vm/100", now - 7200, 3)) < 0 ||
      (rc = submit_backup(rt, st, &vm2, "vm/100", now - 3600, 4)) < 0) {
    fprintf(stderr, "submitting a backup: %s\n", ckl_strerror(rc));
    failures++;
  }
  ckl_task_gc_args ga = {.store = st, .timeout_ms = 30000};
  gc.task.data = &gc;
  if ((rc = ckl_task_gc(rt, &gc.task, &ga, on_progress, on_done)) < 0) {
    fprintf(stderr, "submitting the GC: %s\n", ckl_strerror(rc));
    failures++;
  }
  ckl_task_prune_args pa = {.store = st, .timeout_ms = 30000};
  ckl_group_name_parse("vm/100", &pa.group);
  pa.opts.keep_last = 1;
  prune.task.data = &prune;
  if ((rc = ckl_task_prune(rt, &prune.task, &pa, on_progress, on_done)) < 0) {
    fprintf(stderr, "submitting the prune: %s\n", ckl_strerror(rc));
    failures++;
  }
  printf("%zu tasks running on one loop\n", ckl_runtime_task_count(rt));
  uv_run(&loop, UV_RUN_DEFAULT); /* returns when every task is done */

  ckl_runtime_close(rt, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT); /* let the runtime's handles close */
  uv_loop_close(&loop);
  job *all[] = {&web, &db, &vm1, &vm2, &gc, &prune};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
    if (!all[i]->finished && all[i]->task.rt) failures++;
    free(all[i]->data);
  }
  ckl_fsck_summary sum;
  rc = ckl_fsck(st, NULL, NULL, NULL, &sum);
  printf("fsck: %d problem%s\n", rc, rc == 1 ? "" : "s");
  if (rc != 0) failures++;
  ckl_store_close(st);
  return failures ? 1 : 0;
}

int main(int argc, char **argv) {
  const char *parent = argc > 1 ? argv[1] : "/tmp";
  mkdir(parent, 0700); /* may exist */
  char dir[4096], store[4200];
  snprintf(dir, sizeof dir, "%s/server-loop.XXXXXX", parent);
  if (!mkdtemp(dir)) {
    fprintf(stderr, "mkdtemp %s: %s\n", dir, strerror(errno));
    return 1;
  }
  snprintf(store, sizeof store, "%s/store", dir);
  int rc = run(store);
  remove_tree(AT_FDCWD, dir);
  printf("%s\n", rc == 0 ? "all tasks succeeded" : "FAILED");
  return rc;
}

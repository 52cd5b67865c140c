/*
 * tools/demo.c - the demo's tasks on one libuv loop (see cmd_demo.c).
 *
 * A 100 ms timer schedules: one backup loop per group (a new version,
 * then a backup, then a short pause), a GC every ~1.2 s, a prune every
 * ~0.9 s, verifies and restores of random snapshots, forgets of old ones,
 * a freeze once, and a roster listing for the live view. Tasks that find
 * their lock busy wait asynchronously (the runtime retries on a timer, the
 * loop keeps running: a "lock wait"); content-defined backups, which are
 * custom tasks calling the backup API (the runtime's own backup task cuts
 * fixed chunks), get CKL_EBUSY back and are retried by this scheduler
 * instead. Either way, a task that waited or retried and then succeeded
 * is a conflict that resolved itself.
 *
 * Outcomes that are not failures: a verify, read or forget of a snapshot
 * a prune removed meanwhile (-ENOENT, "gone"), and a task that gave up at
 * its deadline (CKL_EBUSY / CKL_ETIMEDOUT). Failures: anything else, and a
 * restore that reads back other bytes than were written.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tools/cli.h"
#include "tools/demo.h"

#define MS 1000000LL
#define CDC_AVG 16384u
#define FIXED_CHUNK (64u << 10)

static const struct {
  const char *label;
  bool fixed;
  size_t size, cap;
} group_spec[DEMO_GROUPS] = {
    {"host/web", false, 3u << 20, 4u << 20},
    {"host/db", false, 3u << 20, 4u << 20},
    {"vm/disk0", true, 8u << 20, 8u << 20},
};

static uint64_t rnd_state = 0x5eed;
static uint64_t rnd(uint64_t n) { return n ? demo_rand(&rnd_state) % n : 0; }

/* ---- jobs ------------------------------------------------------------------ */

static demo_job *job_new(demo *d, const char *label) {
  demo_job *j = calloc(1, sizeof *j);
  if (!j) return NULL;
  j->d = d;
  j->task.data = j;
  j->group = j->snap = -1;
  snprintf(j->label, sizeof j->label, "%s", label);
  snprintf(j->phase, sizeof j->phase, "queued");
  j->next = d->jobs;
  d->jobs = j;
  return j;
}

/* Unlink a job that failed to submit (no callback will come). */
static void job_drop(demo *d, demo_job *j) {
  for (demo_job **pp = &d->jobs; *pp; pp = &(*pp)->next)
    if (*pp == j) {
      *pp = j->next;
      break;
    }
  free(j->text);
  free(j);
}

/* Jobs whose done_cb has returned: the runtime no longer uses their task. */
static void jobs_reap(demo *d) {
  for (demo_job **pp = &d->jobs; *pp;) {
    demo_job *j = *pp;
    if (j->finished) {
      *pp = j->next;
      free(j->text);
      free(j);
    } else {
      pp = &j->next;
    }
  }
}

static int jobs_in_flight(const demo *d) {
  int n = 0;
  for (const demo_job *j = d->jobs; j; j = j->next) n += !j->finished;
  return n;
}

static void on_progress(ckl_task *t, const ckl_task_progress *p) {
  demo_job *j = t->data;
  snprintf(j->phase, sizeof j->phase, "%s", p->phase);
  j->done = p->done;
  j->total = p->total;
  if (!strcmp(p->phase, "wait")) {
    if (!j->waited) j->d->lock_waits++;
    j->waited = true;
    if (p->waiting_for && p->waiting_for->known)
      snprintf(j->waiting_for, sizeof j->waiting_for, "%s (pid %lld)",
               p->waiting_for->operation, (long long)p->waiting_for->pid);
  }
}

/* Common ending: count what every task shares. Returns true when the
 * status is a success the caller should account for. */
static bool settle(demo_job *j, int status, const char *what) {
  demo *d = j->d;
  j->finished = true;
  bool waited = j->waited || j->task.attempts > 1;
  if (!j->waited && j->task.attempts > 1) d->lock_waits++; /* waited between two views */
  if (status >= 0) {
    if (waited) d->resolved++;
    return true;
  }
  if (status == CKL_EBUSY || status == CKL_ETIMEDOUT) {
    d->gave_up++;
  } else if (status == -ENOENT) {
    d->gone++;
  } else if (status == CKL_ECANCELED) {
    /* only at shutdown */
  } else {
    d->failures++;
    demo_event(d, "%s failed: %s (%s)", what, ckl_strerror(status), ckl_err_name(status));
  }
  return false;
}

/* ---- snapshots we know ---------------------------------------------------------- */

static void snap_add(demo *d, const ckl_snapshot_name *n, int group, uint64_t fnv, uint64_t size) {
  if (d->nsnaps == d->capsnaps) {
    size_t cap = d->capsnaps ? d->capsnaps * 2 : 64;
    demo_snap *v = realloc(d->snaps, cap * sizeof *v);
    if (!v) {
      d->failures++;
      return;
    }
    d->snaps = v;
    d->capsnaps = cap;
  }
  d->snaps[d->nsnaps++] = (demo_snap){.name = *n, .group = group, .fnv = fnv, .size = size};
}

static void snap_gone(demo *d, const ckl_snapshot_name *n) {
  for (size_t i = 0; i < d->nsnaps; i++)
    if (!strcmp(d->snaps[i].name.time, n->time) && !strcmp(d->snaps[i].name.id, n->id) &&
        !strcmp(d->snaps[i].name.type, n->type))
      d->snaps[i].gone = true;
}

/* A snapshot still there, or -1: half of the time one of the oldest
 * (the ones prunes and forgets go for, so readers and deleters meet). */
static int snap_pick(demo *d) {
  size_t alive = 0;
  for (size_t i = 0; i < d->nsnaps; i++) alive += !d->snaps[i].gone;
  if (!alive) return -1;
  size_t k = rnd(2) ? (size_t)rnd(alive < 4 ? alive : 4) : (size_t)rnd(alive);
  for (size_t i = 0; i < d->nsnaps; i++)
    if (!d->snaps[i].gone && k-- == 0) return (int)i;
  return -1;
}

/* ---- backups ------------------------------------------------------------------ */

static void backup_done(ckl_task *t, int status) {
  demo_job *j = t->data;
  demo *d = j->d;
  demo_group *g = &d->groups[j->group];
  g->busy = false;
  int64_t now = cli_now_ns();
  if (status == CKL_EBUSY && !g->fixed) {
    /* the group is being pruned, or the base forgotten: try again soon,
     * same version, same snapshot time */
    j->finished = true;
    d->backup_retries++;
    g->retrying = true;
    g->next_start_ns = now + (int64_t)(50 + rnd(200)) * MS;
    return;
  }
  const ckl_snapshot_name *made = g->fixed ? ckl_task_backup_snapshot(t) : &j->made;
  if (status >= 0 && g->retrying) j->waited = true; /* retried, then got in */
  g->retrying = false;
  if (settle(j, status, j->label) && made) {
    d->backups++;
    snap_add(d, made, j->group, j->fnv, j->size);
  }
  g->mutate = true;
  g->next_time_s += 4 * 3600; /* a snapshot every 4 virtual hours */
  g->next_start_ns = now + (int64_t)rnd(300) * MS;
}

/* Content-defined backup: a custom task (no runtime locks: the backup API
 * takes its own), on a worker thread. */
static int cdc_work(ckl_task_ctx *ctx, void *arg) {
  demo_job *j = arg;
  demo *d = j->d;
  demo_group *g = &d->groups[j->group];
  if (g->mutate) {
    demo_mutate(g);
    g->mutate = false;
  }
  j->size = g->len;
  j->fnv = demo_fnv(DEMO_FNV_INIT, g->buf, g->len);
  ckl_backup_opts bo = {.time_s = j->time_s, .flags = CKL_BACKUP_BASE_LATEST,
                        .busy_holder = &j->who};
  ckl_backup *b;
  int rc = ckl_backup_begin(d->st, &g->name, &bo, &b);
  if (rc < 0) return rc;
  j->made = *ckl_backup_snapshot(b);
  j->made_ok = true;
  ckl_cdc cdc;
  ckl_cdc_init(&cdc, CDC_AVG);
  ckl_backup_archive *a;
  rc = ckl_backup_archive_open(b, "data.didx", 0, &a);
  size_t off = 0;
  while (rc == 0 && off < g->len) {
    if ((rc = ckl_task_ctx_check(ctx)) != 0) break;
    size_t cut = ckl_cdc_next(&cdc, g->buf + off, g->len - off);
    int r = ckl_backup_archive_write_chunk(a, g->buf + off, cut, NULL);
    if (r < 0) rc = r;
    off += cut;
    ckl_task_ctx_progress(ctx, "backup", off, g->len, off);
  }
  if (rc == 0) rc = ckl_backup_archive_close(a);
  else ckl_backup_archive_abort(a);
  if (rc < 0) {
    ckl_backup_abort(b);
    return rc;
  }
  return ckl_backup_finish(b);
}

/* Disk image: the runtime's backup task reads it through this callback on
 * a worker (fixed chunks); the new version is made on the first read. */
static ssize_t disk_read(void *arg, void *buf, size_t len) {
  demo_job *j = arg;
  demo_group *g = &j->d->groups[j->group];
  if (j->off == 0) {
    if (g->mutate) {
      demo_mutate(g);
      g->mutate = false;
    }
    j->fnv = DEMO_FNV_INIT;
    j->size = g->len;
  }
  size_t n = g->len - j->off < len ? g->len - j->off : len;
  memcpy(buf, g->buf + j->off, n);
  j->fnv = demo_fnv(j->fnv, buf, n);
  j->off += n;
  return (ssize_t)n;
}

static void start_backup(demo *d, int gi) {
  demo_group *g = &d->groups[gi];
  char label[256];
  snprintf(label, sizeof label, "backup %s", g->label);
  demo_job *j = job_new(d, label);
  if (!j) return;
  j->group = gi;
  j->time_s = g->next_time_s;
  int rc;
  if (g->fixed) {
    j->ar = (ckl_task_archive){.name = "disk.fidx", .chunk_size = FIXED_CHUNK,
                               .read = disk_read, .read_arg = j, .size_hint = g->len};
    ckl_task_backup_args a = {.store = d->st, .group = g->name, .narchives = 1,
                              .archives = &j->ar, .timeout_ms = 5000};
    a.opts.time_s = j->time_s;
    a.opts.flags = CKL_BACKUP_BASE_LATEST;
    rc = ckl_task_backup(d->rt, &j->task, &a, on_progress, backup_done);
  } else {
    ckl_task_custom_args a = {.store = d->st, .timeout_ms = CKL_TRY, .work = cdc_work,
                              .work_arg = j};
    rc = ckl_task_custom(d->rt, &j->task, &a, on_progress, backup_done);
  }
  if (rc < 0) {
    job_drop(d, j);
    d->failures++;
    demo_event(d, "cannot submit %s: %s", label, ckl_strerror(rc));
    return;
  }
  g->busy = true;
}

/* ---- maintenance ------------------------------------------------------------------ */

static void gc_done(ckl_task *t, int status) {
  demo_job *j = t->data;
  demo *d = j->d;
  d->gc_busy = false;
  const ckl_gc_result *r = ckl_task_gc_result(t);
  if (settle(j, status, "gc") && r) {
    d->gc_runs++;
    d->gc_removed_chunks += r->removed_chunks;
    d->gc_removed_bytes += r->removed_bytes;
  }
  d->next_gc = cli_now_ns() + 700 * MS;
}

static void start_gc(demo *d) {
  demo_job *j = job_new(d, "gc");
  if (!j) return;
  ckl_task_gc_args a = {.store = d->st, .timeout_ms = 4000};
  a.opts.use_safety = 1; /* collect what is unreferenced now (the store's margin stays) */
  if (ckl_task_gc(d->rt, &j->task, &a, on_progress, gc_done) < 0) {
    job_drop(d, j);
    d->failures++;
    return;
  }
  d->gc_busy = true;
}

static void prune_done(ckl_task *t, int status) {
  demo_job *j = t->data;
  demo *d = j->d;
  d->prune_busy = false;
  size_t n = 0;
  const ckl_prune_item *it = ckl_task_prune_items(t, &n);
  if (settle(j, status, j->label)) d->prunes++;
  for (size_t i = 0; it && i < n; i++)
    if (!it[i].keep && (it[i].rc == 0 || it[i].rc == -ENOENT)) {
      snap_gone(d, &it[i].name);
      d->pruned += it[i].rc == 0;
    }
  d->next_prune = cli_now_ns() + 500 * MS;
}

static void start_prune(demo *d) {
  int gi = (int)rnd(DEMO_GROUPS);
  char label[256];
  snprintf(label, sizeof label, "prune %s", d->groups[gi].label);
  demo_job *j = job_new(d, label);
  if (!j) return;
  j->group = gi;
  ckl_task_prune_args a = {.store = d->st, .group = d->groups[gi].name, .timeout_ms = 3000};
  a.opts.keep_last = 3;
  a.opts.keep_daily = 2;
  if (ckl_task_prune(d->rt, &j->task, &a, on_progress, prune_done) < 0) {
    job_drop(d, j);
    d->failures++;
    return;
  }
  d->prune_busy = true;
}

static void forget_done(ckl_task *t, int status) {
  demo_job *j = t->data;
  demo *d = j->d;
  d->forget_busy = false;
  if (settle(j, status, j->label)) d->forgot++;
  if (status >= 0 || status == -ENOENT) d->snaps[j->snap].gone = true;
  d->next_forget = cli_now_ns() + 700 * MS;
}

/* Forget an old snapshot of a group that has more than three: one that
 * a verify or restore is reading if there is one (the forget then waits
 * for it), else the oldest. */
static void start_forget(demo *d) {
  int gi = (int)rnd(DEMO_GROUPS), alive = 0, oldest = -1;
  for (size_t i = 0; i < d->nsnaps; i++)
    if (!d->snaps[i].gone && d->snaps[i].group == gi) {
      alive++;
      if (oldest < 0 || (d->snaps[i].readers > 0 && d->snaps[oldest].readers == 0 &&
                         alive <= 3))
        oldest = (int)i;
    }
  d->next_forget = cli_now_ns() + 500 * MS;
  if (alive <= 3) return;
  char label[256];
  snprintf(label, sizeof label, "forget %s/%s", d->groups[gi].label, d->snaps[oldest].name.time);
  demo_job *j = job_new(d, label);
  if (!j) return;
  j->snap = oldest;
  ckl_task_forget_args a = {.store = d->st, .snapshot = d->snaps[oldest].name,
                            .timeout_ms = 1500};
  if (ckl_task_forget(d->rt, &j->task, &a, on_progress, forget_done) < 0) {
    job_drop(d, j);
    d->failures++;
    return;
  }
  d->forgets++;
  d->forget_busy = true;
}

static void verify_done(ckl_task *t, int status) {
  demo_job *j = t->data;
  demo *d = j->d;
  d->verifies_busy--;
  d->snaps[j->snap].readers--;
  if (settle(j, status, j->label)) d->verifies++;
  if (status == -ENOENT) d->snaps[j->snap].gone = true;
}

static void start_verify(demo *d) {
  int s = snap_pick(d);
  if (s < 0) return;
  char label[256];
  snprintf(label, sizeof label, "verify %s/%s/%s", d->snaps[s].name.type, d->snaps[s].name.id,
           d->snaps[s].name.time);
  demo_job *j = job_new(d, label);
  if (!j) return;
  j->snap = s;
  ckl_task_verify_args a = {.store = d->st, .snapshot = d->snaps[s].name, .timeout_ms = 1500};
  if (ckl_task_verify(d->rt, &j->task, &a, on_progress, verify_done) < 0) {
    job_drop(d, j);
    d->failures++;
    return;
  }
  d->verifies_busy++;
  d->snaps[s].readers++;
}

/* Restores hash what they read (worker thread) and compare at the end. */
static int read_write(void *arg, const char *archive, uint64_t offset, const void *buf,
                      size_t len) {
  demo_job *j = arg;
  (void)archive;
  if (offset != j->size) return CKL_ECORRUPT; /* bytes arrive in order */
  j->fnv = demo_fnv(j->fnv, buf, len);
  j->size += len;
  return 0;
}

static void read_done(ckl_task *t, int status) {
  demo_job *j = t->data;
  demo *d = j->d;
  d->reads_busy--;
  demo_snap *s = &d->snaps[j->snap];
  s->readers--;
  if (settle(j, status, j->label)) {
    d->reads++;
    if (j->fnv == s->fnv && j->size == s->size) {
      d->reads_matched++;
    } else {
      d->failures++;
      demo_event(d, "%s read back other bytes than were written", j->label);
    }
  }
  if (status == -ENOENT) s->gone = true;
}

static void start_read(demo *d) {
  int s = snap_pick(d);
  if (s < 0) return;
  char label[256];
  snprintf(label, sizeof label, "restore %s/%s/%s", d->snaps[s].name.type,
           d->snaps[s].name.id, d->snaps[s].name.time);
  demo_job *j = job_new(d, label);
  if (!j) return;
  j->snap = s;
  j->fnv = DEMO_FNV_INIT;
  ckl_task_read_args a = {.store = d->st, .snapshot = d->snaps[s].name, .write = read_write,
                          .write_arg = j, .timeout_ms = 1500};
  if (ckl_task_read(d->rt, &j->task, &a, on_progress, read_done) < 0) {
    job_drop(d, j);
    d->failures++;
    return;
  }
  d->reads_busy++;
  d->snaps[s].readers++;
}

/* The freeze `with-lock --shared` takes, held for a moment as if an rsync
 * copied the store: GCs, prunes and forgets meanwhile wait for it. */
static int freeze_work(ckl_task_ctx *ctx, void *arg) {
  demo_job *j = arg;
  ckl_freeze f = {0};
  ckl_freeze_opts fo = {.timeout_ms = 5000, .operation = "with-lock", .busy_holder = &j->who};
  int rc = ckl_freeze_acquire(j->d->st, CKL_FREEZE_SHARED, &f, &fo);
  if (rc < 0) return rc;
  ckl_task_ctx_progress(ctx, "frozen", 0, 0, 0);
  for (int i = 0; i < 16 && rc == 0; i++) { /* ~0.8 s, checking for a cancel */
    struct timespec ts = {0, 50 * MS};
    nanosleep(&ts, NULL);
    rc = ckl_task_ctx_check(ctx);
  }
  ckl_freeze_release(&f);
  return rc;
}

static void freeze_done(ckl_task *t, int status) {
  demo_job *j = t->data;
  if (settle(j, status, "freeze")) {
    j->d->freezes++;
    demo_event(j->d, "freeze released: deleters that waited for it go on");
  }
}

static void start_freeze(demo *d) {
  demo_job *j = job_new(d, "freeze (with-lock --shared)");
  if (!j) return;
  ckl_task_custom_args a = {.timeout_ms = CKL_TRY, .work = freeze_work, .work_arg = j};
  if (ckl_task_custom(d->rt, &j->task, &a, on_progress, freeze_done) < 0) {
    job_drop(d, j);
    d->failures++;
    return;
  }
  demo_event(d, "freeze requested (what `chunklock with-lock --shared` takes)");
  /* ask for deletions while it is held: they wait for it */
  int64_t soon = cli_now_ns() + 200 * MS;
  d->next_gc = d->next_prune = d->next_forget = soon;
}

/* The roster, listed on a worker (an LMDB transaction never runs on the
 * loop), for the live view. */
typedef struct text_buf {
  char *p;
  size_t len, cap;
} text_buf;

static int list_holder(const ckl_roster_entry *e, void *arg) {
  text_buf *b = arg;
  if (b->len + 160 > b->cap) return 1; /* enough for a screen */
  char since[32];
  cli_format_time(e->start_ns, since, sizeof since);
  const char *target = e->parsed ? e->target : "?";
  const char *slash = strrchr(target, '/');
  if (slash && strstr(target, "/.lock")) target = slash + 1; /* ".lock#freeze" */
  b->len += (size_t)snprintf(b->p + b->len, b->cap - b->len, "  %-10s pid %-7lld %-9s %.60s\n",
                             e->parsed ? e->operation : "?", (long long)e->pid,
                             e->flags & CKL_ROSTER_EXCLUSIVE ? "exclusive" : "shared", target);
  return 0;
}

static int locks_work(ckl_task_ctx *ctx, void *arg) {
  (void)ctx;
  demo_job *j = arg;
  text_buf b = {.cap = 2048};
  if (!(b.p = calloc(1, b.cap))) return -ENOMEM;
  int rc = ckl_roster_list(j->d->store_path, list_holder, &b);
  j->text = b.p;
  return rc < 0 ? rc : 0;
}

static void locks_done(ckl_task *t, int status) {
  demo_job *j = t->data;
  j->d->locks_busy = false;
  j->finished = true; /* not counted: the view's own bookkeeping */
  if (status >= 0 && j->text) snprintf(j->d->locks_text, sizeof j->d->locks_text, "%s", j->text);
}

static void start_locks(demo *d) {
  demo_job *j = job_new(d, "(live view: roster)");
  if (!j) return;
  ckl_task_custom_args a = {.timeout_ms = CKL_TRY, .work = locks_work, .work_arg = j};
  if (ckl_task_custom(d->rt, &j->task, &a, NULL, locks_done) < 0) {
    job_drop(d, j);
    return;
  }
  d->locks_busy = true;
}

/* ---- the scheduler ------------------------------------------------------------------ */

static void on_closed(ckl_runtime *rt, void *arg) {
  (void)rt;
  demo *d = arg;
  d->closed = true;
}

static void on_tick(uv_timer_t *tm) {
  demo *d = tm->data;
  jobs_reap(d);
  int64_t now = cli_now_ns();
  if (!d->stopping && now >= d->end_ns) {
    d->stopping = true;
    demo_event(d, "time is up: no new tasks; waiting for %d to finish", jobs_in_flight(d));
  }
  if (!d->stopping) {
    for (int g = 0; g < DEMO_GROUPS; g++)
      if (!d->groups[g].busy && now >= d->groups[g].next_start_ns) start_backup(d, g);
    if (!d->gc_busy && now >= d->next_gc) start_gc(d);
    if (!d->prune_busy && now >= d->next_prune) start_prune(d);
    if (!d->forget_busy && now >= d->next_forget) start_forget(d);
    if (d->verifies_busy < 2 && now >= d->next_verify) {
      start_verify(d);
      d->next_verify = now + (int64_t)(200 + rnd(400)) * MS;
    }
    if (d->reads_busy < 2 && now >= d->next_read) {
      start_read(d);
      d->next_read = now + (int64_t)(300 + rnd(500)) * MS;
    }
    if (!d->freeze_started && now >= d->start_ns + (d->end_ns - d->start_ns) * 2 / 5) {
      d->freeze_started = true;
      start_freeze(d);
    }
  }
  if (!d->locks_busy && now >= d->next_locks && !d->stopping) {
    start_locks(d);
    d->next_locks = now + (d->tty ? 300 : 1000) * MS;
  }
  if (now >= d->next_view) {
    demo_view(d, false);
    d->next_view = now + (d->tty ? 200 : 1000) * MS;
  }
  if (d->stopping && jobs_in_flight(d) == 0) {
    jobs_reap(d);
    uv_timer_stop(&d->tick);
    uv_close((uv_handle_t *)&d->tick, NULL);
    ckl_runtime_close(d->rt, on_closed, d);
  }
}

static int make_data(demo *d) {
  int64_t now_s = cli_wall_ns() / 1000000000LL;
  int64_t t0 = now_s - 30 * 86400 - now_s % 3600; /* 30 days ago, on the hour */
  for (int i = 0; i < DEMO_GROUPS; i++) {
    demo_group *g = &d->groups[i];
    g->label = group_spec[i].label;
    g->fixed = group_spec[i].fixed;
    if (ckl_group_name_parse(g->label, &g->name) < 0) return -EINVAL;
    g->cap = group_spec[i].cap;
    g->len = group_spec[i].size;
    if (!(g->buf = malloc(g->cap))) return -ENOMEM;
    g->seed = 0xC0FFEE + (uint64_t)i * 7919;
    demo_fill(g->buf, g->len, g->seed);
    g->mutate = false;
    g->next_time_s = t0 + i * 600;
  }
  /* db shares its first MiB with web: dedup across groups */
  memcpy(d->groups[1].buf, d->groups[0].buf, 1u << 20);
  return 0;
}

void demo_remove_tree(const char *path) {
  struct stat sb;
  if (lstat(path, &sb) != 0) return;
  if (S_ISDIR(sb.st_mode)) {
    DIR *dir = opendir(path);
    if (dir) {
      struct dirent *e;
      while ((e = readdir(dir)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        size_t n = strlen(path) + strlen(e->d_name) + 2;
        char *p = malloc(n);
        if (!p) continue;
        snprintf(p, n, "%s/%s", path, e->d_name);
        demo_remove_tree(p);
        free(p);
      }
      closedir(dir);
    }
    rmdir(path);
  } else {
    unlink(path);
  }
}

int demo_run(demo *d) {
  ckl_store_create_opts co = {.set = CKL_STORE_SET_ATIME_SAFETY | CKL_STORE_SET_MARGIN,
                              .gc_atime_safety_s = 0, .gc_margin_s = 1,
                              .sync = CKL_SYNC_NONE, .compress_level = 1,
                              .chunk_average_size = 64u << 10};
  int rc = ckl_store_create(d->store_path, &co);
  if (rc < 0) return cli_fail(rc, NULL, "cannot create the demo store %s", d->store_path);
  if ((rc = ckl_store_open(d->store_path, NULL, &d->st)) < 0)
    return cli_fail(rc, NULL, "cannot open %s", d->store_path);
  if ((rc = make_data(d)) < 0) {
    ckl_store_close(d->st);
    return cli_fail(rc, NULL, "cannot make the demo data");
  }
  uv_loop_init(&d->loop);
  ckl_runtime_opts ro = {.loop = &d->loop, .max_threads = 8, .progress_interval_ms = 100,
                         .backoff_max_ms = 200};
  if ((rc = ckl_runtime_new(&ro, &d->rt)) < 0) {
    ckl_store_close(d->st);
    uv_loop_close(&d->loop);
    return cli_fail(rc, NULL, "cannot start the runtime");
  }
  fprintf(d->out, "chunklock demo: %d s on store %s\n", d->seconds, d->store_path);
  fprintf(d->out, "groups: host/web, host/db (content-defined chunks, 16 KiB average; db shares a\n"
         "MiB with web), vm/disk0 (8 MiB disk image, fixed 64 KiB chunks). A snapshot\n"
         "every 4 virtual hours; prunes keep the last 3 and 2 dailies.\n\n");
  fflush(d->out);
  d->start_ns = cli_now_ns();
  d->end_ns = d->start_ns + (int64_t)d->seconds * 1000 * MS;
  d->next_gc = d->start_ns + 600 * MS;
  d->next_prune = d->start_ns + 900 * MS;
  d->next_forget = d->start_ns + 1500 * MS;
  uv_timer_init(&d->loop, &d->tick);
  d->tick.data = d;
  uv_timer_start(&d->tick, on_tick, 0, 100);
  uv_run(&d->loop, UV_RUN_DEFAULT);
  if (!d->closed) d->failures++; /* the loop ended before the runtime closed */
  uv_loop_close(&d->loop);
  demo_view(d, true);
  int ec = demo_summary(d);
  for (int i = 0; i < DEMO_GROUPS; i++) free(d->groups[i].buf);
  free(d->snaps);
  ckl_store_close(d->st);
  return ec;
}

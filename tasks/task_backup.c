/*
 * tasks/task_backup.c - backup and read (restore) as tasks.
 *
 * Backup. An attempt is the intent check (a writer holds back for another
 * process's waiting strict GC), then ckl_backup_begin with CKL_TRY: busy
 * means nothing was taken and the runtime retries. Once begun, the task
 * owns the session on its worker thread: each archive is read from its
 * source in chunk_size pieces, each piece inserted and appended; a safe
 * point (cancel, lease) comes before every chunk and right before finish,
 * and the session's finish checks again after its last sync (the backup
 * code calls the observer's checkpoint). Any stop aborts the session:
 * ckl_backup_abort removes the partial snapshot through the forget path, so
 * a GC that listed it does not abort and fsck finds nothing half-written.
 *
 * Read. ckl_reader_open with its shared snapshot lock is the attempt
 * (CKL_EBUSY while the snapshot is being written or forgotten); then each
 * archive is read in 1 MiB pieces and handed to the write callback, with a
 * safe point between pieces.
 */
#include <stdlib.h>
#include <string.h>

#include "datastore/store_internal.h"
#include "tasks/tasks_internal.h"

#define READ_PIECE ((size_t)1 << 20)

typedef struct arch {
  char *name;
  uint64_t chunk_size;
  ckl_task_read_fn read;
  void *read_arg;
  const void *data;
  size_t size;
} arch;

typedef struct backup_args {
  ckl_store *st;
  ckl_group_name group;
  ckl_backup_opts opts;
  ckl_snapshot_name base;
  bool has_base;
  size_t narch;
  arch *arch;
  uint64_t total;
  ckl_snapshot_name snap; /* set once begin succeeded */
  bool begun;
} backup_args;

/* Fill buf with up to want bytes of the source: a full chunk unless the
 * archive ends. Returns the count or a negative code. */
static ssize_t fill(arch *a, uint64_t *pos, unsigned char *buf, size_t want) {
  if (!a->read) {
    size_t left = *pos < a->size ? a->size - (size_t)*pos : 0;
    size_t n = left < want ? left : want;
    memcpy(buf, (const unsigned char *)a->data + *pos, n);
    *pos += n;
    return (ssize_t)n;
  }
  size_t got = 0;
  while (got < want) {
    ssize_t n = a->read(a->read_arg, buf + got, want - got);
    if (n < 0) return n;
    if (n == 0) break;
    got += (size_t)n;
  }
  *pos += got;
  return (ssize_t)got;
}

static int write_archive(ckl__task_impl *t, ckl_backup *b, arch *a, uint64_t *done) {
  backup_args *ba = t->args;
  ckl_backup_archive *ar = NULL;
  uint64_t cs = a->chunk_size ? a->chunk_size : ckl_store_get_config(ba->st)->chunk_average_size;
  int rc = ckl_backup_archive_open(b, a->name, cs, &ar);
  if (rc < 0) return rc;
  unsigned char *buf = malloc((size_t)cs);
  if (!buf) {
    ckl_backup_archive_abort(ar);
    return -ENOMEM;
  }
  uint64_t pos = 0;
  for (;;) {
    if ((rc = ckl__task_checkpoint(t)) < 0) break;
    ssize_t n = fill(a, &pos, buf, (size_t)cs);
    if (n <= 0) {
      rc = (int)n;
      break;
    }
    rc = ckl_backup_archive_write_chunk(ar, buf, (size_t)n, NULL);
    if (rc < 0) break;
    *done += (uint64_t)n;
    ckl__task_progress(t, "backup", *done, ba->total, *done);
    if ((size_t)n < cs) break; /* the archive's end */
  }
  free(buf);
  if (rc < 0) {
    ckl_backup_archive_abort(ar);
    return rc;
  }
  return ckl_backup_archive_close(ar);
}

static int backup_attempt(ckl__task_impl *t, bool *busy) {
  backup_args *a = t->args;
  int rc = ckl__task_state(t, a->st->path);
  if (rc < 0) return rc;
  rc = ckl__intent_check(t, a->st, &t->busy_holder);
  if (rc < 0) return rc;
  if (rc == 1) {
    *busy = true;
    return CKL_EBUSY;
  }
  ckl_backup_opts o = a->opts;
  o.base = a->has_base ? &a->base : NULL;
  o.proclock_timeout_ms = CKL_TRY;
  o.busy_holder = &t->busy_holder;
  ckl_backup *b = NULL;
  rc = ckl_backup_begin(a->st, &a->group, &o, &b);
  if (rc == CKL_EBUSY) {
    *busy = true;
    return rc;
  }
  if (rc < 0) return rc;
  a->snap = *ckl_backup_snapshot(b);
  a->begun = true;
  rc = CKL_FAILPOINT("task.backup.after_begin");
  uint64_t done = 0;
  for (size_t i = 0; rc == 0 && i < a->narch; i++) rc = write_archive(t, b, &a->arch[i], &done);
  if (rc == 0) rc = CKL_FAILPOINT("task.backup.before_finish");
  if (rc == 0) rc = ckl__task_checkpoint(t);
  if (rc < 0) {
    ckl_backup_abort(b); /* the partial snapshot goes through the forget path */
    return rc;
  }
  return ckl_backup_finish(b);
}

static void backup_free(ckl__task_impl *t) {
  backup_args *a = t->args;
  for (size_t i = 0; i < a->narch; i++) free(a->arch[i].name);
  free(a->arch);
  free(a);
}

static const task_vt backup_vt = {.type = CKL_TASK_BACKUP, .phase = "backup",
                                  .attempt = backup_attempt, .free_args = backup_free};

int ckl_task_backup(ckl_runtime *rt, ckl_task *task, const ckl_task_backup_args *args,
                    ckl_task_progress_cb progress_cb, ckl_task_done_cb done_cb) {
  if (!rt || !task || !args || !args->store || args->timeout_ms < CKL_FOREVER ||
      args->narchives == 0 || args->narchives > CKL_TASK_MAX_ARCHIVES || !args->archives)
    return -EINVAL;
  for (size_t i = 0; i < args->narchives; i++) {
    const ckl_task_archive *x = &args->archives[i];
    if (!x->name || (!x->read && x->size && !x->data)) return -EINVAL;
  }
  backup_args *a = calloc(1, sizeof *a);
  if (!a) return -ENOMEM;
  a->arch = calloc(args->narchives, sizeof *a->arch);
  if (!a->arch) {
    free(a);
    return -ENOMEM;
  }
  a->narch = args->narchives;
  a->st = args->store;
  a->group = args->group;
  a->opts = args->opts;
  if (args->opts.base) {
    a->base = *args->opts.base;
    a->has_base = true;
  }
  a->opts.base = NULL;
  a->opts.busy_holder = NULL;
  bool total_known = true;
  for (size_t i = 0; i < a->narch; i++) {
    const ckl_task_archive *x = &args->archives[i];
    arch *d = &a->arch[i];
    if (!(d->name = strdup(x->name))) {
      backup_free(&(ckl__task_impl){.args = a});
      return -ENOMEM;
    }
    d->chunk_size = x->chunk_size;
    d->read = x->read;
    d->read_arg = x->read_arg;
    d->data = x->data;
    d->size = x->size;
    uint64_t hint = x->size_hint ? x->size_hint : (x->read ? 0 : x->size);
    if (!hint && x->read) total_known = false;
    a->total += hint;
  }
  if (!total_known) a->total = 0;
  ckl__task_impl *t = ckl__task_alloc(&backup_vt, a);
  if (!t) {
    backup_free(&(ckl__task_impl){.args = a});
    return -ENOMEM;
  }
  t->timeout_ms = args->timeout_ms;
  return ckl__task_submit(rt, task, t, progress_cb, done_cb);
}

const ckl_snapshot_name *ckl_task_backup_snapshot(const ckl_task *task) {
  if (!task || !task->impl_ || task->impl_->vt != &backup_vt || !task->impl_->decided)
    return NULL;
  backup_args *a = task->impl_->args;
  return a->begun ? &a->snap : NULL;
}

/* ---- read ------------------------------------------------------------------------------ */

typedef struct read_args {
  ckl_store *st;
  ckl_snapshot_name snap;
  char *archive;
  ckl_task_write_fn write;
  void *write_arg;
} read_args;

static int read_one(ckl__task_impl *t, ckl_reader *r, const char *name, unsigned char *buf,
                    uint64_t *done, uint64_t total) {
  read_args *a = t->args;
  ckl_reader_archive *ar = NULL;
  int rc = ckl_reader_archive_open(r, name, &ar);
  if (rc < 0) return rc;
  uint64_t off = 0;
  for (;;) {
    if ((rc = ckl__task_checkpoint(t)) < 0) break;
    ssize_t n = ckl_reader_archive_read(ar, off, buf, READ_PIECE);
    if (n <= 0) {
      rc = (int)n;
      break;
    }
    rc = a->write(a->write_arg, name, off, buf, (size_t)n);
    if (rc < 0) break;
    off += (uint64_t)n;
    *done += (uint64_t)n;
    ckl__task_progress(t, "read", *done, total, *done);
  }
  ckl_reader_archive_close(ar);
  return rc;
}

static int read_attempt(ckl__task_impl *t, bool *busy) {
  read_args *a = t->args;
  int rc = ckl__task_state(t, a->st->path);
  if (rc < 0) return rc;
  ckl_reader_opts ro = {.busy_holder = &t->busy_holder};
  ckl_reader *r = NULL;
  rc = ckl_reader_open(a->st, &a->snap, &ro, &r);
  if (rc == CKL_EBUSY) {
    *busy = true;
    return rc;
  }
  if (rc < 0) return rc;
  unsigned char *buf = malloc(READ_PIECE);
  if (!buf) {
    ckl_reader_close(r);
    return -ENOMEM;
  }
  /* total: the sizes of the archives to read */
  uint64_t total = 0, done = 0;
  size_t n = ckl_reader_archive_count(r);
  for (size_t i = 0; i < n; i++) {
    const char *name = ckl_reader_archive_name(r, i);
    if (a->archive && strcmp(a->archive, name) != 0) continue;
    ckl_reader_archive *ar;
    if (ckl_reader_archive_open(r, name, &ar) == 0) {
      total += ckl_reader_archive_size(ar);
      ckl_reader_archive_close(ar);
    }
  }
  rc = CKL_FAILPOINT("task.read.after_open");
  bool found = !a->archive;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    const char *name = ckl_reader_archive_name(r, i);
    if (a->archive && strcmp(a->archive, name) != 0) continue;
    found = true;
    rc = read_one(t, r, name, buf, &done, total);
  }
  if (rc == 0 && !found) rc = -ENOENT; /* no such archive in the manifest */
  free(buf);
  int cr = ckl_reader_close(r);
  return rc < 0 ? rc : cr;
}

static void read_free(ckl__task_impl *t) {
  read_args *a = t->args;
  free(a->archive);
  free(a);
}

static const task_vt read_vt = {.type = CKL_TASK_READ, .phase = "read", .attempt = read_attempt,
                                .free_args = read_free};

int ckl_task_read(ckl_runtime *rt, ckl_task *task, const ckl_task_read_args *args,
                  ckl_task_progress_cb progress_cb, ckl_task_done_cb done_cb) {
  if (!rt || !task || !args || !args->store || !args->write || args->timeout_ms < CKL_FOREVER)
    return -EINVAL;
  read_args *a = calloc(1, sizeof *a);
  if (!a) return -ENOMEM;
  a->st = args->store;
  a->snap = args->snapshot;
  a->write = args->write;
  a->write_arg = args->write_arg;
  if (args->archive && !(a->archive = strdup(args->archive))) {
    free(a);
    return -ENOMEM;
  }
  ckl__task_impl *t = ckl__task_alloc(&read_vt, a);
  if (!t) {
    read_free(&(ckl__task_impl){.args = a});
    return -ENOMEM;
  }
  t->timeout_ms = args->timeout_ms;
  return ckl__task_submit(rt, task, t, progress_cb, done_cb);
}

/* gc/sweep.c - the sweep protocol (see gc/sweep.h for why it is safe). */
#include "gc/sweep.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/internal.h"

#define PREFIX_COUNT 65536
#define PREFIX_BATCH 64 /* directories a worker claims at once */
#define SWEEP_RECHECK_BATCHES 16

typedef struct sweep_ctx {
  const ckl__sweep_opts *opts;
  atomic_uint next_prefix;
  atomic_int fatal;           /* first fatal error, 0 if none */
  /* Auto mode: helpers take no batch while `stand_by` is set. Written by
   * the calling thread only, under `mu`, with a broadcast whenever it is
   * cleared or `ended` is set, so a helper that saw it set and waits on
   * `cv` cannot miss the change (it re-reads both under `mu`). */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool stand_by, ended;
  uint64_t writer_checks;
} sweep_ctx;

typedef struct worker {
  sweep_ctx *ctx;
  struct worker *first; /* the calling thread's worker */
  ckl__sweep_stats stats;
  pthread_t thread;
  /* Per-worker scratch, reused for every directory: the raw getdents64
   * records and the names read from them (NUL-separated). */
  _Alignas(struct dirent64) char dents[32768];
  char *names;
  size_t used, cap;
} worker;

static int64_t atime_ns(const struct stat *st) {
  return (int64_t)st->st_atim.tv_sec * 1000000000LL + st->st_atim.tv_nsec;
}

static bool is_hex64(const char *s) {
  for (int i = 0; i < 64; i++) {
    char c = s[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return s[64] == '\0';
}

/* "<hex>.<N>.bad" */
static bool is_bad_name(const char *s) {
  size_t n = strlen(s);
  return n > 69 && s[64] == '.' && strcmp(s + n - 4, ".bad") == 0;
}

/* Remove-or-restore a file already at its trash name. `chunk` is the
 * final name. The re-stat is the "verify" half of rename-then-verify. */
static void judge_trash(int dfd, const char *trash, const char *chunk, const ckl__sweep_opts *o,
                        ckl__sweep_stats *s) {
  struct stat st;
  if (fstatat(dfd, trash, &st, AT_SYMLINK_NOFOLLOW) != 0) {
    s->errors++;
    ckl__log_warn("gc sweep: cannot stat %s: %s", trash, strerror(errno));
    return;
  }
  if (atime_ns(&st) < o->cutoff_ns) {
    int rc = CKL_FAILPOINT("gc.sweep.before_unlink");
    if (rc < 0 || unlinkat(dfd, trash, 0) != 0) {
      s->errors++;
      ckl__log_warn("gc sweep: cannot unlink %s: %s", trash,
                    rc < 0 ? ckl_strerror(rc) : strerror(errno));
      return;
    }
    s->removed_chunks++;
    s->removed_bytes += (uint64_t)st.st_size;
    return;
  }
  /* Touched inside the window: it is live. Put it back unless a writer
   * already rewrote the chunk (it got ENOENT on its touch); then the copy
   * at the trash name is a duplicate. */
  if (renameat2(dfd, trash, dfd, chunk, RENAME_NOREPLACE) == 0) {
    s->restored++;
  } else if (errno == EEXIST) {
    if (unlinkat(dfd, trash, 0) != 0) s->errors++;
    s->rewritten++;
  } else {
    s->errors++;
    ckl__log_error("gc sweep: cannot restore %s to %s: %s", trash, chunk, strerror(errno));
  }
}

static void sweep_chunk(int dfd, const char *name, const struct stat *st,
                        const ckl__sweep_opts *o, ckl__sweep_stats *s) {
  int64_t at = atime_ns(st);
  s->disk_chunks++;
  s->disk_bytes += (uint64_t)st->st_size;
  if (at >= o->cutoff_ns) {
    if (at < o->pending_below_ns) {
      s->pending_chunks++;
      s->pending_bytes += (uint64_t)st->st_size;
    }
    return;
  }
  if (o->dry_run) {
    s->removed_chunks++;
    s->removed_bytes += (uint64_t)st->st_size;
    return;
  }
  char trash[80];
  snprintf(trash, sizeof trash, ".gc-%s", name);
  int rc = CKL_FAILPOINT("gc.sweep.before_rename");
  if (rc < 0) {
    s->errors++;
    return;
  }
  /* RENAME_NOREPLACE: a leftover .gc-<hex> from a crashed GC is judged on
   * its own when the walk reaches it; never clobber it here. */
  if (renameat2(dfd, name, dfd, trash, RENAME_NOREPLACE) != 0) {
    if (errno == ENOENT) return; /* removed or renamed by someone else: nothing to do */
    if (errno == EEXIST) return; /* leftover trash copy exists: next pass / next GC */
    s->errors++;
    ckl__log_warn("gc sweep: cannot rename %s: %s", name, strerror(errno));
    return;
  }
  rc = CKL_FAILPOINT("gc.sweep.after_rename");
  (void)rc; /* an error here still must put the chunk back or judge it */
  judge_trash(dfd, trash, name, o, s);
}

static void sweep_leftover(int dfd, const char *name, const ckl__sweep_opts *o,
                           ckl__sweep_stats *s) {
  /* ".gc-<hex>": a crashed GC's rename window. Judge it like a chunk. */
  s->leftovers++;
  if (o->dry_run) return;
  judge_trash(dfd, name, name + 4, o, s);
}

/* Append name (with its NUL) to the worker's name list. */
static int push_name(worker *w, const char *n) {
  size_t len = strlen(n) + 1;
  if (w->used + len > w->cap) {
    size_t ncap = w->cap ? w->cap * 2 : 4096;
    while (ncap < w->used + len) ncap *= 2;
    char *nn = realloc(w->names, ncap);
    if (!nn) return -ENOMEM;
    w->names = nn;
    w->cap = ncap;
  }
  memcpy(w->names + w->used, n, len);
  w->used += len;
  return 0;
}

static int sweep_prefix(worker *w, unsigned prefix) {
  const ckl__sweep_opts *o = w->ctx->opts;
  ckl__sweep_stats *s = &w->stats;
  char pname[8];
  snprintf(pname, sizeof pname, "%04x", prefix);
  int dfd = openat(o->chunks_dirfd, pname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0) {
    if (errno == ENOENT) return 0;
    int err = -errno;
    ckl__log_error("gc sweep: cannot open chunk directory .chunks/%s: %s", pname, strerror(errno));
    return err;
  }
  /* Read the whole directory first, then act: our own renames add
   * ".gc-<hex>" entries that a later read of the same directory could
   * return, and only files that existed before the walk are leftovers of
   * a crashed GC. Prefix directories are small (chunks / 65,536).
   * getdents64 on the one fd we already hold, into the worker's buffer:
   * dup + fdopendir + closedir cost five syscalls more per directory (dup,
   * fstat, two fcntl, close), 327,680 per run, a third of all the sweep's
   * syscalls at 100k chunks (docs/benchmarks.md). The *at calls below do
   * not depend on the directory offset this moves. */
  w->used = 0;
  int rc = 0;
  for (;;) {
    ssize_t got = getdents64(dfd, w->dents, sizeof w->dents);
    if (got < 0) {
      if (errno == EINTR) continue;
      rc = -errno;
      ckl__log_error("gc sweep: cannot read chunk directory .chunks/%s: %s", pname,
                     strerror(errno));
      break;
    }
    if (got == 0) break;
    for (size_t off = 0; rc == 0 && off < (size_t)got;) {
      const struct dirent64 *e = (const struct dirent64 *)(const void *)(w->dents + off);
      off += e->d_reclen;
      const char *n = e->d_name;
      if (n[0] == '.' && (n[1] == '\0' || (n[1] == '.' && n[2] == '\0'))) continue;
      if (e->d_type != DT_REG && e->d_type != DT_UNKNOWN) {
        ckl__log_warn("gc sweep: ignoring non-file .chunks/%s/%s", pname, n);
        continue;
      }
      rc = push_name(w, n);
    }
    if (rc < 0) break;
  }
  const char *names = w->names;
  size_t used = w->used;
  for (size_t off = 0; rc == 0 && off < used; off += strlen(names + off) + 1) {
    const char *n = names + off;
    struct stat st;
    if (fstatat(dfd, n, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno != ENOENT) s->errors++;
      continue;
    }
    if (!S_ISREG(st.st_mode)) {
      ckl__log_warn("gc sweep: ignoring non-file .chunks/%s/%s", pname, n);
      continue;
    }
    if (is_hex64(n)) {
      sweep_chunk(dfd, n, &st, o, s);
    } else if (strncmp(n, ".gc-", 4) == 0 && is_hex64(n + 4)) {
      sweep_leftover(dfd, n, o, s);
    } else if (strncmp(n, ".tmp-", 5) == 0) {
      int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
      if (mt < o->cutoff_ns && !o->dry_run && unlinkat(dfd, n, 0) == 0) s->temps_removed++;
    } else if (is_bad_name(n)) {
      s->bad_chunks++;
      s->bad_bytes += (uint64_t)st.st_size;
    } else {
      ckl__log_debug("gc sweep: ignoring unknown file .chunks/%s/%s", pname, n);
    }
  }
  ckl__close(dfd);
  return rc;
}

/* Auto mode, calling thread: ask whether writers are registered and let
 * the helpers work or stand by accordingly. */
static void recheck_writers(sweep_ctx *ctx) {
  const ckl__sweep_opts *o = ctx->opts;
  if (o->threads != 0 || !o->writers_live) return;
  int live = o->writers_live(o->writers_arg);
  pthread_mutex_lock(&ctx->mu);
  ctx->writer_checks++;
  bool was = ctx->stand_by;
  ctx->stand_by = live != 0;
  if (was && !ctx->stand_by) pthread_cond_broadcast(&ctx->cv);
  pthread_mutex_unlock(&ctx->mu);
  (void)CKL_FAILPOINT("gc.sweep.after_writer_check");
}

/* A helper: false once the sweep is over for it (ended, failed or
 * cancelled), true when it may claim the next batch. */
static bool helper_may_work(sweep_ctx *ctx) {
  pthread_mutex_lock(&ctx->mu);
  while (ctx->stand_by && !ctx->ended) pthread_cond_wait(&ctx->cv, &ctx->mu);
  bool go = !ctx->ended;
  pthread_mutex_unlock(&ctx->mu);
  return go;
}

static void *worker_main(void *arg) {
  worker *w = arg;
  sweep_ctx *ctx = w->ctx;
  bool helper = w != w->first;
  unsigned batches = 0;
  for (;;) {
    if (helper && !helper_may_work(ctx)) break;
    if (!helper && batches > 0 && batches % SWEEP_RECHECK_BATCHES == 0) recheck_writers(ctx);
    if (atomic_load(&ctx->fatal) != 0) break;
    if (ctx->opts->cancel && atomic_load(ctx->opts->cancel)) {
      int zero = 0;
      atomic_compare_exchange_strong(&ctx->fatal, &zero, CKL_ECANCELED);
      break;
    }
    unsigned start = atomic_fetch_add(&ctx->next_prefix, PREFIX_BATCH);
    if (start >= PREFIX_COUNT) break;
    batches++;
    if (helper) {
      w->stats.helper_batches++;
      (void)CKL_FAILPOINT("gc.sweep.helper_batch");
    }
    for (unsigned p = start; p < start + PREFIX_BATCH && p < PREFIX_COUNT; p++) {
      int rc = sweep_prefix(w, p);
      if (rc < 0) {
        int zero = 0;
        atomic_compare_exchange_strong(&ctx->fatal, &zero, rc);
        return NULL;
      }
    }
    /* Only the calling thread has the runtime's observer (if any). */
    ckl__observe_progress("sweep", start + PREFIX_BATCH, PREFIX_COUNT, w->stats.disk_bytes);
  }
  return NULL;
}

static void add_stats(ckl__sweep_stats *a, const ckl__sweep_stats *b) {
  a->disk_chunks += b->disk_chunks;
  a->disk_bytes += b->disk_bytes;
  a->removed_chunks += b->removed_chunks;
  a->removed_bytes += b->removed_bytes;
  a->pending_chunks += b->pending_chunks;
  a->pending_bytes += b->pending_bytes;
  a->bad_chunks += b->bad_chunks;
  a->bad_bytes += b->bad_bytes;
  a->restored += b->restored;
  a->rewritten += b->rewritten;
  a->temps_removed += b->temps_removed;
  a->leftovers += b->leftovers;
  a->errors += b->errors;
  a->helper_batches += b->helper_batches;
}

int ckl__sweep(const ckl__sweep_opts *opts, ckl__sweep_stats *stats) {
  sweep_ctx ctx = {.opts = opts};
  atomic_init(&ctx.next_prefix, 0);
  atomic_init(&ctx.fatal, 0);
  pthread_mutex_init(&ctx.mu, NULL);
  pthread_cond_init(&ctx.cv, NULL);
  int n = opts->threads > 0 ? opts->threads : 2;
  if (n > 16) n = 16;
  worker *ws = calloc((size_t)n, sizeof *ws);
  if (!ws) return -ENOMEM;
  /* Before any helper exists: a helper must not take a batch that the
   * first answer would have left to the calling thread. */
  recheck_writers(&ctx);
  int started = 0;
  for (int i = 0; i < n; i++) {
    ws[i].ctx = &ctx;
    ws[i].first = &ws[0];
    /* Worker 0 is this thread; the rest are helpers. */
    if (i > 0 && pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]) != 0) break;
    started = i + 1;
  }
  worker_main(&ws[0]);
  /* Whatever ended the calling thread's loop (no directories left, an
   * error, a cancel) ends the helpers' wait: none may sleep past it. */
  pthread_mutex_lock(&ctx.mu);
  ctx.ended = true;
  pthread_cond_broadcast(&ctx.cv);
  pthread_mutex_unlock(&ctx.mu);
  for (int i = 1; i < started; i++) pthread_join(ws[i].thread, NULL);
  memset(stats, 0, sizeof *stats);
  for (int i = 0; i < started; i++) add_stats(stats, &ws[i].stats);
  stats->writer_checks = ctx.writer_checks;
  pthread_cond_destroy(&ctx.cv);
  pthread_mutex_destroy(&ctx.mu);
  for (int i = 0; i < n; i++) free(ws[i].names);
  free(ws);
  return atomic_load(&ctx.fatal);
}

/*
 * gc/gc.c - one garbage collection run: locks, coordination state, mark,
 * removed-during-GC set, sweep, trash purge, status. The protocol and its
 * errors are described in include/chunklock/gc.h; the sweep's safety
 * argument in gc/sweep.h.
 *
 * Invariants this file keeps:
 *   G1  No sweep unless the mark saw every index that existed at
 *       phase1_start, or knows (removed-during-GC set) that the snapshot
 *       was forgotten and will be marked from .trash. A dry run keeps G1
 *       for its report, except that its forgets are settled instead of
 *       kept: the forget deleted the copy at once (datastore/forget.c),
 *       the dry run does not mark it, and reports the snapshot's chunks
 *       as garbage, as a GC that starts now would free them.
 *   G2  gc_active is cleared on every path out of this function: by the
 *       final removed-set transaction on success, by gc_abort otherwise.
 *       A crash leaves it set; the next gc_begin (under the GC lock)
 *       recovers it.
 *   G3  cutoff <= oldest registered writer's start - margin, so every
 *       chunk a live writer inserted or touched survives.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chunklock/chunklock.h"
#include "common/internal.h"
#include "datastore/ops_internal.h"
#include "datastore/state.h"
#include "datastore/store_internal.h"
#include "datastore/digest_set.h"
#include "gc/gc_internal.h"
#include "gc/mark.h"
#include "gc/sweep.h"
#include "locks/atomic_file.h"
#include "locks/locks_internal.h"

#define SEC 1000000000LL

typedef struct gc_run {
  ckl_store *st;
  const ckl_gc_opts *o;
  ckl_gc_result *r;
  ckl__state *state;
  char token[CKL_TOKEN_HEX_LEN + 1]; /* roster token = GC token */
  ckl__digest_set touched;
  ckl__mark_stats mark;
  atomic_bool cancel_flag;           /* mirrors *o->cancel for the workers */
} gc_run;

static bool cancelled(gc_run *g) {
  if (g->o->cancel && __atomic_load_n(g->o->cancel, __ATOMIC_RELAXED)) {
    atomic_store(&g->cancel_flag, true);
    return true;
  }
  return atomic_load(&g->cancel_flag);
}

/* Mark the given index files of one snapshot directory (`rel` relative to
 * the store root). A file that no longer exists sets *vanished so the
 * caller can apply G1; other errors are returned (abort-worthy). */
static int mark_files(gc_run *g, const char *rel, char *const *files, size_t nfiles,
                      bool *vanished) {
  for (size_t i = 0; i < nfiles; i++) {
    char ipath[4096];
    int rc = ckl__pathf(ipath, sizeof ipath, "%s/%s/%s", g->st->path, rel, files[i]);
    if (rc < 0) return rc;
    rc = ckl__mark_index(g->st->chunks, ipath, &g->touched, &g->mark, &g->cancel_flag);
    if (rc == -ENOENT) {
      *vanished = true;
      continue;
    }
    if (rc < 0) return rc;
  }
  return 0;
}

/* Mark every index file found now in a snapshot directory (used for the
 * .trash copies of the removed-during-GC set). -ENOENT if the directory
 * itself is gone. */
static int mark_snapshot_dir(gc_run *g, const char *rel, bool *vanished) {
  char path[4096];
  int rc = ckl__pathf(path, sizeof path, "%s/%s", g->st->path, rel);
  if (rc < 0) return rc;
  int dfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0) return -errno;
  DIR *d = fdopendir(dfd);
  if (!d) {
    rc = -errno;
    ckl__close(dfd);
    return rc;
  }
  struct dirent *e;
  rc = 0;
  while (rc == 0 && (e = readdir(d)) != NULL) {
    if (ckl_archive_name_kind(e->d_name, strlen(e->d_name)) == CKL_ARCHIVE_NONE) continue;
    char *name = e->d_name;
    rc = mark_files(g, rel, &name, 1, vanished);
  }
  closedir(d);
  return rc;
}

typedef struct listing {
  ckl_snapshot_info *snaps; /* every snapshot of every group */
  size_t n, cap;
} listing;

static void listing_free(listing *l) {
  ckl_snapshot_list_free(l->snaps, l->n);
  memset(l, 0, sizeof *l);
}

/* Take the whole index list before marking anything, so "vanished" means
 * "was there at listing time and is gone now". */
static int list_all(gc_run *g, listing *l) {
  ckl_group_name *groups = NULL;
  size_t ngroups = 0;
  int rc = ckl_group_list(g->st, &groups, &ngroups);
  if (rc < 0) {
    ckl__log_error("gc: cannot list groups of %s: %s", g->st->path, ckl_strerror(rc));
    return rc;
  }
  for (size_t i = 0; rc == 0 && i < ngroups; i++) {
    ckl_snapshot_info *snaps = NULL;
    size_t n = 0;
    rc = ckl_snapshot_list(g->st, &groups[i], &snaps, &n);
    if (rc == -ENOENT) { /* the whole group was forgotten meanwhile */
      rc = 0;
      continue;
    }
    if (rc < 0) break;
    if (n == 0) continue; /* snaps is NULL */
    if (l->n + n > l->cap) {
      size_t ncap = (l->n + n) * 2;
      ckl_snapshot_info *v = realloc(l->snaps, ncap * sizeof *v);
      if (!v) {
        ckl_snapshot_list_free(snaps, n);
        rc = -ENOMEM;
        break;
      }
      l->snaps = v;
      l->cap = ncap;
    }
    memcpy(l->snaps + l->n, snaps, n * sizeof *snaps);
    l->n += n;
    free(snaps); /* the entries' contents now belong to l */
  }
  free(groups);
  return rc;
}

/* Phase 1a: the indexes of every snapshot listed now. */
static int mark_listed(gc_run *g) {
  listing l = {0};
  int rc = list_all(g, &l);
  /* Failpoint: the index list is taken, nothing marked yet (the Proxmox
   * race window: a backup may start and a forget may land from here on). */
  if (rc == 0) rc = CKL_FAILPOINT("gc.mark.after_list");
  for (size_t j = 0; rc == 0 && j < l.n; j++) {
    if (cancelled(g)) {
      rc = CKL_ECANCELED;
      break;
    }
    char rel[CKL_SNAP_NAME_MAX + 1];
    rc = ckl_snapshot_name_format(&l.snaps[j].name, rel, sizeof rel);
    if (rc < 0) break;
    rc = CKL_FAILPOINT("gc.mark.before_snapshot");
    if (rc < 0) break;
    ckl__observe_progress("mark", j, l.n, g->mark.logical_bytes);
    bool vanished = false;
    rc = mark_files(g, rel, l.snaps[j].files, l.snaps[j].nfiles, &vanished);
    if (rc < 0) break;
    if (vanished) {
      /* G1: only a forget may take an index away from under the mark. */
      int removed = ckl__state_is_removed(g->state, rel);
      if (removed < 0) {
        rc = removed;
      } else if (!removed) {
        ckl__log_error("gc: index files of %s vanished during the mark, and the snapshot was "
                       "not forgotten: aborting before the sweep", rel);
        rc = CKL_EGCABORT;
      } else if (g->o->dry_run) {
        ckl__log_info("gc (dry run): %s was forgotten during the mark and deleted: its chunks "
                      "count as garbage unless something else references them", rel);
      }
    }
  }
  listing_free(&l);
  if (rc < 0 && rc != CKL_ECANCELED && rc != CKL_EGCABORT && rc != CKL_ELOCKLOST) {
    /* an unreadable index (EACCES, EIO, corrupt) means an incomplete view */
    ckl__log_error("gc: mark failed (%s): aborting before the sweep", ckl_strerror(rc));
    rc = CKL_EGCABORT;
  }
  return rc;
}

/* Phase 1b: snapshots forgotten during the mark, from .trash, until a
 * write transaction finds nothing unmarked and clears gc_active (G2). */
static int mark_removed_set(gc_run *g) {
  int rc = CKL_FAILPOINT("gc.mark.before_removed_set");
  if (rc < 0) return rc;
  for (;;) {
    if (cancelled(g)) return CKL_ECANCELED;
    ckl__removed_list l = {0};
    rc = ckl__state_removed_take_unmarked(g->state, g->token, &l);
    if (rc < 0) return rc;
    if (l.n == 0) {
      ckl__removed_list_free(&l);
      return 0; /* gc_active is now clear */
    }
    rc = 0; /* take_unmarked returned the entry count */
    for (size_t i = 0; rc == 0 && i < l.n; i++) {
      bool vanished = false;
      rc = mark_snapshot_dir(g, l.v[i].trash_rel, &vanished);
      if (rc == -ENOENT || vanished) {
        /* The trash copy is only deleted by a GC purge, by a forget that
         * ran while gc_active was clear, or by the forget of a settled
         * entry (a dry run's), which is never handed out: none can happen
         * to this entry. A missing one means someone else deleted it. */
        ckl__log_error("gc: forgotten snapshot %s is missing from %s: aborting",
                       l.v[i].snapshot_rel, l.v[i].trash_rel);
        rc = CKL_EGCABORT;
      } else if (rc < 0) {
        ckl__log_error("gc: cannot mark forgotten snapshot %s: %s", l.v[i].trash_rel,
                       ckl_strerror(rc));
        if (rc != CKL_ECANCELED) rc = CKL_EGCABORT;
      } else {
        g->r->removed_set_snapshots++;
      }
    }
    ckl__removed_list_free(&l);
    if (rc < 0) return rc;
  }
}

/* Phase 3: empty .trash/. Entries may be deleted concurrently by a forget
 * that ran while gc_active was clear: ENOENT is fine. */
/* The sweep's auto mode asks this on the GC's own thread (gc/sweep.h). */
static int sweep_writers_live(void *arg) {
  int n = 0;
  int rc = ckl__state_writers_live(arg, 0, &n);
  return rc < 0 ? rc : n;
}

static int purge_trash(gc_run *g) {
  int rc = CKL_FAILPOINT("gc.purge.before");
  if (rc < 0) return rc;
  int tfd = open(g->st->trash_path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (tfd < 0) {
    if (errno == ENOENT) return 0;
    rc = -errno;
    ckl__log_error("gc: cannot open %s: %s", g->st->trash_path, strerror(errno));
    return rc;
  }
  int lfd = dup(tfd);
  DIR *d = lfd >= 0 ? fdopendir(lfd) : NULL;
  if (!d) {
    rc = -errno;
    ckl__close(lfd);
    ckl__close(tfd);
    return rc;
  }
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    rc = CKL_FAILPOINT("gc.purge.before_entry");
    if (rc < 0) break;
    int r = ckl__atomic_rmtree_at(tfd, e->d_name);
    if (r < 0 && r != -ENOENT) {
      ckl__log_warn("gc: cannot purge %s/%s: %s", g->st->trash_path, e->d_name, ckl_strerror(r));
      continue;
    }
    if (r == 0) g->r->trash_purged++;
  }
  closedir(d);
  ckl__close(tfd);
  return rc;
}

static int64_t safety_s(const gc_run *g) {
  if (g->o->use_safety && g->o->atime_safety_s >= 0) return g->o->atime_safety_s;
  return g->st->cfg.gc_atime_safety_s;
}

int ckl_gc_run(ckl_store *st, const ckl_gc_opts *opts, ckl_gc_result *out) {
  static const ckl_gc_opts defaults;
  const ckl_gc_opts *o = opts ? opts : &defaults;
  ckl_gc_result scratch;
  ckl_gc_result *r = out ? out : &scratch;
  memset(r, 0, sizeof *r);
  if (!st) return -EINVAL;
  r->start_ns = ckl__now_realtime_ns();
  r->dry_run = o->dry_run;
  r->exclusive = o->exclusive;
  r->oldest_writer_ns = INT64_MAX;

  gc_run g = {.st = st, .o = o, .r = r};
  atomic_init(&g.cancel_flag, false);
  ckl_gclock gl = {0};
  ckl_proclock_guard excl = {0};
  ckl_deleter del = {0};
  bool began = false;
  int rc = ckl_gclock_acquire(st->lock_path, &gl, o->wait_ms, o->busy_holder);
  if (rc < 0) return rc;
  rc = CKL_FAILPOINT("gc.begin.after_lock");
  if (rc < 0) goto out;
  /* Opened through the operations' registry before the process locker:
   * a strict GC refused by backups of other processes names one of them
   * from the roster (datastore/ops_common.c). */
  rc = ckl__ops_state_open(st, &g.state);
  if (rc < 0) goto out;
  if (o->exclusive) {
    /* Strict mode (Proxmox semantics): exclusive between processes; this
     * process's own writers keep their shared guards. */
    rc = ckl__proclock_exclusive_as(st->proclock, &excl, o->wait_ms, o->busy_holder, "gc");
    if (rc < 0) goto out;
  }
  if (!o->dry_run) {
    /* A GC that sweeps deletes: it must not run while the store is frozen
     * (freeze.h). Held for the whole run, so a freeze waits for or fails
     * on a running GC instead of finding it mid-sweep. */
    ckl_freeze_opts fo = {.timeout_ms = o->wait_ms, .operation = "gc",
                          .busy_holder = o->busy_holder};
    rc = ckl_deleter_acquire(st, &del, &fo);
    if (rc < 0) goto out;
  }
  rc = CKL_FAILPOINT("gc.begin.after_guard");
  if (rc < 0) goto out;
  ckl__roster_reg reg = {.operation = "gc", .target = st->lock_path,
                         .flags = CKL_ROSTER_EXCLUSIVE};
  rc = ckl__state_register(g.state, &reg, g.token);
  if (rc < 0) goto out;

  ckl__gc_begin_info bi;
  /* The dry-run flag tells forgets not to leave their snapshots for us
   * (datastore/state_gc.c): we hold no deleter guard to purge them. */
  rc = ckl__state_gc_begin(g.state, g.token, 0, o->dry_run ? CKL__GC_DRY_RUN : 0, &bi);
  if (rc < 0) goto out;
  began = true;
  if (bi.recovered)
    ckl__log_warn("gc: recovered the state of a GC that died (%zu forgotten snapshots)",
                  bi.stale_removed);
  r->phase1_start_ns = bi.phase1_start_ns;
  r->oldest_writer_ns = bi.oldest_writer_start_ns;
  rc = CKL_FAILPOINT("gc.begin.after_state");
  if (rc < 0) goto out;

  rc = ckl__gc_atime_check(ckl_chunkstore_dirfd(st->chunks), st->chunks_path);
  if (rc < 0) goto out;

  /* ---- phase 1: mark ---- */
  int64_t t0 = ckl__now_monotonic_ns();
  rc = mark_listed(&g);
  if (rc == 0) rc = mark_removed_set(&g);
  r->mark_ns = ckl__now_monotonic_ns() - t0;
  r->index_files = g.mark.index_files;
  r->references = g.mark.references;
  r->referenced_chunks = ckl__digest_set_count(&g.touched);
  r->cache_hits = g.mark.cache_hits;
  r->cache_misses = g.mark.touched + g.mark.missing_chunks;
  r->missing_chunks = g.mark.missing_chunks;
  r->logical_bytes = g.mark.logical_bytes;
  r->touch_set_bytes = ckl__digest_set_bytes(&g.touched);
  ckl__digest_set_free(&g.touched);
  if (rc < 0) goto out;
  began = false; /* gc_active was cleared by the final removed-set txn */

  /* ---- phase 2: sweep ---- */
  int64_t margin = st->cfg.gc_margin_s * SEC;
  int64_t no_writer_cutoff = r->phase1_start_ns - safety_s(&g) * SEC;
  int64_t cutoff = no_writer_cutoff;
  if (r->oldest_writer_ns < cutoff) cutoff = r->oldest_writer_ns;
  /* G3 and the coarse-timestamp margin, applied even when safety is 0. */
  cutoff -= margin;
  r->cutoff_ns = cutoff;
  rc = CKL_FAILPOINT("gc.sweep.before");
  if (rc < 0) goto out;
  ckl__sweep_opts so = {.chunks_dirfd = ckl_chunkstore_dirfd(st->chunks),
                        .cutoff_ns = cutoff,
                        .pending_below_ns = no_writer_cutoff - margin,
                        .dry_run = o->dry_run != 0,
                        .threads = o->threads,
                        .cancel = &g.cancel_flag,
                        .writers_live = sweep_writers_live,
                        .writers_arg = g.state};
  ckl__sweep_stats ss;
  t0 = ckl__now_monotonic_ns();
  if (cancelled(&g)) {
    rc = CKL_ECANCELED;
    goto out;
  }
  rc = ckl__sweep(&so, &ss);
  r->sweep_ns = ckl__now_monotonic_ns() - t0;
  r->disk_chunks = ss.disk_chunks;
  r->disk_bytes = ss.disk_bytes;
  r->removed_chunks = ss.removed_chunks;
  r->removed_bytes = ss.removed_bytes;
  r->pending_chunks = ss.pending_chunks;
  r->pending_bytes = ss.pending_bytes;
  r->bad_chunks = ss.bad_chunks;
  if (rc < 0) goto out;

  /* ---- phase 3: purge the trash, write the status ---- */
  t0 = ckl__now_monotonic_ns();
  if (!o->dry_run) rc = purge_trash(&g);
  r->purge_ns = ckl__now_monotonic_ns() - t0;
  if (rc < 0) goto out;
  /* The removed set has served its purpose: its snapshots are purged, or
   * (a dry run's, all settled) were deleted by their forgets. */
  int er = ckl__state_gc_end(g.state, g.token);
  if (er < 0) ckl__log_warn("gc: could not clear the removed-during-GC set: %s", ckl_strerror(er));
  r->end_ns = ckl__now_realtime_ns();
  if (!o->dry_run) {
    rc = CKL_FAILPOINT("gc.status.before_write");
    if (rc == 0) rc = ckl__gc_status_write(st, r);
    /* A GC that died writing .gc-status left its temp file in the store's
     * top directory, where nothing else would ever look. Only temps whose
     * writer's lock is free are removed (locks/atomic_file.c), so a live
     * writer's temp is safe; a failure here costs a few bytes, not the GC. */
    if (rc == 0) (void)ckl_atomic_cleanup(st->path);
  }

out:
  if (began) {
    /* G2 on the error path. gc_abort fails only if the state itself is
     * gone, in which case there is no flag left to clear. */
    int ar = ckl__state_gc_abort(g.state, g.token);
    if (ar < 0 && ar != CKL_ELOCKLOST)
      ckl__log_warn("gc: could not clear gc_active: %s", ckl_strerror(ar));
  }
  ckl__digest_set_free(&g.touched);
  if (g.state) {
    if (g.token[0]) ckl__state_deregister(g.state, g.token);
    ckl__ops_state_close(st, g.state);
  }
  ckl_deleter_release(&del);
  ckl_proclock_release(&excl);
  ckl_gclock_release(&gl);
  if (!r->end_ns) r->end_ns = ckl__now_realtime_ns();
  if (rc < 0 && rc != CKL_EBUSY)
    ckl__log_error("gc of %s failed: %s", st->path, ckl_strerror(rc));
  return rc;
}

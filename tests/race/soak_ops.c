/*
 * tests/race/soak_ops.c - what a soak worker thread does: pick an
 * operation at random, perturb the interleaving with failpoints, run it,
 * check its result, record it.
 *
 * Every result is classified: ok, or one of the answers the API documents
 * for a concurrent store (busy, timed out, gone). Busy and timed-out
 * answers must name their holder. Anything else is a failure that stops
 * the soak and names the operation, the snapshot, the error and the
 * library's log of that operation.
 */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "soak.h"

/* ---- per thread: the worker, and the library's log of the current op ---- */

static _Thread_local soak_worker *tl_worker;
static _Thread_local char tl_log[12288];
static _Thread_local size_t tl_log_len;

/* Runs on the thread that logs (the library logs on the caller's thread),
 * so a thread-local buffer needs no lock. Keeps the newest text. */
static void log_cb(ckl_log_level level, const char *msg, void *ud) {
  (void)ud;
  char line[1024];
  int n = snprintf(line, sizeof line, "[%s] %s\n", ckl_log_level_name(level), msg);
  if (n < 0) return;
  size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
  if (tl_log_len + len + 1 > sizeof tl_log) {
    size_t keep = tl_log_len / 2;
    memmove(tl_log, tl_log + tl_log_len - keep, keep);
    tl_log_len = keep;
  }
  memcpy(tl_log + tl_log_len, line, len);
  tl_log_len += len;
  tl_log[tl_log_len] = '\0';
}

/* The trace hook: which failpoint this worker passed last. */
static void trace_cb(const char *name, void *arg) {
  (void)arg;
  soak_worker *w = tl_worker;
  if (!w) return;
  int i = soak_fp_index(name);
  if (i < 0) return;
  atomic_store(&soak->cur_fp[w->slot], i);
  int op = atomic_load(&soak->cur_op[w->slot]);
  if (op >= 0 && op < OP_N) atomic_store(&soak->steps[op][i], 1);
}

/* Failpoints the soak perturbs: every protocol step the operations pass.
 * Left out: store creation, fsck (the coordinator's), soft locks and the
 * runtime (not used here). */
static const char *const fp_prefixes[] = {
    "chunk.",   "index.",   "backup.",  "forget.",   "prune.",   "verify.", "restore.",
    "update_manifest.", "state.", "gc.",  "atomic.", "flock.",  "proclock.", "gclock.",
    "freeze.",  NULL};

/* Where a crash-mode worker may die: backup, insert, index, manifest,
 * forget, prune, GC mark, sweep and purge. */
static const char *const crash_points[] = {
    "backup.after_register",       "backup.after_mkdir",
    "backup.archive.after_close",  "backup.before_finish",
    "backup.after_manifest",       "backup.abort.before_remove",
    "chunk.insert.after_tmp_create", "chunk.insert.after_tmp_write",
    "chunk.insert.before_rename",  "chunk.insert.after_rename",
    "index.write.after_create",    "index.write.after_entries",
    "index.write.before_commit",   "index.write.after_rename",
    "update_manifest.after_lock",  "update_manifest.after_load",
    "update_manifest.before_replace", "update_manifest.after_replace",
    "atomic.after_create",         "atomic.before_rename",
    "forget.after_lock",           "state.forget.before_move",
    "state.forget.before_commit",  "forget.after_move",
    "forget.before_unlink",        "prune.after_list",
    "prune.before_remove",         "gc.begin.after_state",
    "gc.mark.after_list",          "gc.mark.before_snapshot",
    "gc.mark.before_removed_set",  "state.removed.before_clear_active",
    "gc.sweep.before_rename",      "gc.sweep.after_rename",
    "gc.sweep.before_unlink",      "gc.purge.before",
    "gc.purge.before_entry",       "gc.status.before_write"};

static int chaos_fp[SOAK_FP_MAX];
static int chaos_n;

void soak_worker_process_init(void) {
  ckl_log_set(log_cb, NULL, CKL_LOG_DEBUG);
  chaos_n = 0;
  for (size_t i = 0; i < soak_fp_count(); i++) {
    const char *name = soak_fp_name((int)i);
    for (const char *const *p = fp_prefixes; *p; p++) {
      if (strncmp(name, *p, strlen(*p)) != 0) continue;
      /* "count": traced, behaviour unchanged */
      if (ckl_failpoint_arm(name, "count") != 0) soak_fail("cannot arm %s", name);
      chaos_fp[chaos_n++] = (int)i;
      break;
    }
  }
  for (size_t i = 0; i < sizeof crash_points / sizeof *crash_points; i++) {
    int found = 0;
    for (size_t k = 0; k < soak_fp_count(); k++)
      found |= strcmp(soak_fp_name((int)k), crash_points[i]) == 0;
    if (!found) soak_fail("crash point %s is not in the failpoint catalog", crash_points[i]);
  }
  ckl_failpoint_set_trace(trace_cb, NULL);
}

/* Arm a short sleep somewhere (process-wide: every thread of this process
 * meets it), end one, and in crash mode now and then arm a crash. */
static void chaos(soak_worker *w) {
  if (chaos_n == 0) return;
  if (soak_below(&w->rng, 100) < 30) {
    const char *name = soak_fp_name(chaos_fp[soak_below(&w->rng, (uint32_t)chaos_n)]);
    char action[48];
    snprintf(action, sizeof action, "%u*sleep(%u)", 1 + soak_below(&w->rng, 3),
             soak_below(&w->rng, 21));
    if (ckl_failpoint_arm(name, action) == 0) atomic_fetch_add(&soak->fp_sleeps_armed, 1);
  }
  if (soak_below(&w->rng, 100) < 10)
    ckl_failpoint_arm(soak_fp_name(chaos_fp[soak_below(&w->rng, (uint32_t)chaos_n)]), "count");
  if (soak->crash && soak_below(&w->rng, 1000) < 8) {
    const char *name = crash_points[soak_below(&w->rng, sizeof crash_points / sizeof *crash_points)];
    if (ckl_failpoint_arm(name, "1*crash") == 0) atomic_fetch_add(&soak->crashes_armed, 1);
  }
}

/* ---- results ------------------------------------------------------------- */

static void count(soak_op op, soak_res r) { atomic_fetch_add(&soak->counts[op][r], 1); }

static void op_fail(soak_worker *w, soak_op op, const char *snap, int rc, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void op_fail(soak_worker *w, soak_op op, const char *snap, int rc, const char *fmt, ...) {
  char what[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  soak_fail("op %s, snapshot %s: %s: %s (%s)\n  worker: process %d (pid %d, life %d) thread %d, "
            "thread seed 0x%llx\n  library log of this op:\n%s",
            soak_op_names[op], snap ? snap : "-", what, ckl_err_name(rc), ckl_strerror(rc),
            w->proc, (int)getpid(), w->life, w->thread, (unsigned long long)w->seed,
            tl_log_len ? tl_log : "  (nothing logged)\n");
}

/* Busy and timed out are answers, not failures, but they must say who is
 * in the way. Returns 1 when rc was one of them (counted), 0 otherwise. */
static int busy_answer(soak_worker *w, soak_op op, const char *snap, int rc, const ckl_holder *h) {
  if (rc != CKL_EBUSY && rc != CKL_ETIMEDOUT) return 0;
  if (!h->known) {
    if (atomic_load(&soak->strict_holder)) {
      op_fail(w, op, snap, rc, "busy answer without a holder (target \"%s\")", h->target);
      return 1;
    }
    atomic_fetch_add(&soak->busy_no_holder, 1);
  }
  count(op, rc == CKL_EBUSY ? RES_BUSY : RES_TIMEDOUT);
  return 1;
}

static void fmt_name(const ckl_snapshot_name *n, char *buf, size_t len) {
  if (ckl_snapshot_name_format(n, buf, len) < 0) snprintf(buf, len, "?");
}

/* A COMPLETE (or with `any`, also WRITING) snapshot of the table, copied:
 * its slot, generation, name and recipe. -1 when there is none. */
static int pick_snap(soak_worker *w, int any, ckl_snapshot_name *n, uint32_t *gen,
                     soak_recipe *r) {
  int found = -1;
  soak_lock();
  uint32_t start = soak_below(&w->rng, SOAK_MAX_SNAPS);
  for (uint32_t k = 0; k < SOAK_MAX_SNAPS && found < 0; k++) {
    int i = (int)((start + k) % SOAK_MAX_SNAPS);
    soak_snap *s = &soak->snaps[i];
    if (s->state == S_COMPLETE || (any && s->state == S_WRITING)) {
      found = i;
      soak_snap_name(s->group, s->time_s, n);
      if (gen) *gen = s->gen;
      if (r) *r = s->r;
    }
  }
  soak_unlock();
  return found;
}

/* Free a table entry by name (a forget or prune removed it). */
static void snap_gone(const ckl_snapshot_name *n) {
  soak_lock();
  int i = soak_find_locked(n);
  if (i >= 0) {
    soak->snaps[i].state = S_FREE;
    soak->snaps[i].gen++;
  }
  soak_unlock();
}

/* ---- backup ------------------------------------------------------------- */

typedef struct plan {
  soak_recipe r;
  uint8_t reuse[SOAK_ARCHIVES][SOAK_CHUNKS]; /* 1: known from the base: touch */
  int abort_at;                              /* archive index to abort before, -1 never */
} plan;

/* The new snapshot's recipe: chunks reused from the base (same kind of
 * archive), shared by all groups, or new. */
static void make_plan(soak_worker *w, const soak_recipe *base, plan *p) {
  memset(p, 0, sizeof *p);
  p->r.narch = (uint8_t)(1 + soak_below(&w->rng, SOAK_ARCHIVES));
  for (int a = 0; a < p->r.narch; a++) {
    soak_arch *ar = &p->r.arch[a];
    ar->fixed = a == 1 && soak_below(&w->rng, 2);
    ar->n = (uint8_t)(1 + soak_below(&w->rng, SOAK_CHUNKS));
    const soak_arch *ba = base && a < base->narch && base->arch[a].fixed == ar->fixed
                              ? &base->arch[a]
                              : NULL;
    for (int k = 0; k < ar->n; k++) {
      uint32_t c = soak_below(&w->rng, 100);
      /* a fixed archive's last chunk is short: reuse full-size ones only */
      int ok_fixed = ba && (!ar->fixed || k < ar->n - 1);
      if (ba && c < 45) {
        int j = (int)soak_below(&w->rng, ba->fixed && ba->n > 1 ? ba->n - 1u : ba->n);
        if (ok_fixed && (!ba->fixed || j < ba->n - 1)) {
          ar->seed[k] = ba->seed[j];
          p->reuse[a][k] = 1;
          continue;
        }
      }
      if (c < 70)
        ar->seed[k] = 1 + soak_below(&w->rng, SOAK_COMMON);
      else
        ar->seed[k] = (uint32_t)atomic_fetch_add(&soak->next_seed, 1);
    }
  }
  p->abort_at = soak_below(&w->rng, 100) < 8 ? (int)soak_below(&w->rng, p->r.narch + 1u) : -1;
}

static int write_archive(soak_worker *w, ckl_backup *b, const plan *p, int a, const char *snap) {
  const soak_arch *ar = &p->r.arch[a];
  char name[32];
  soak_arch_name(ar, a, name, sizeof name);
  ckl_backup_archive *arc;
  int rc = ckl_backup_archive_open(b, name, SOAK_FIXED, &arc);
  if (rc < 0) {
    op_fail(w, OP_BACKUP, snap, rc, "archive_open %s", name);
    return rc;
  }
  unsigned char buf[SOAK_FIXED + 64];
  for (int k = 0; k < ar->n; k++) {
    size_t len = soak_chunk_len(ar->seed[k], ar->fixed, k == ar->n - 1);
    soak_chunk_fill(ar->seed[k], buf, len);
    ckl_digest d;
    ckl_digest_compute(buf, len, &d);
    if (p->reuse[a][k]) {
      /* The base is locked shared and references this chunk: a GC marks
       * it, so it exists. -ENOENT here is a lost chunk, not a re-upload. */
      rc = ckl_backup_reuse_chunk(b, &d);
      if (rc == 0) {
        atomic_fetch_add(&soak->chunks_reused, 1);
        rc = ckl_backup_archive_append(arc, &d, len);
      } else {
        op_fail(w, OP_BACKUP, snap, rc, "reuse of chunk %d (seed %u) of the base, archive %s", k,
                ar->seed[k], name);
        ckl_backup_archive_abort(arc);
        return rc;
      }
    } else {
      rc = ckl_backup_archive_write_chunk(arc, buf, len, NULL);
      if (rc == CKL_INSERT_NEW) atomic_fetch_add(&soak->chunks_new, 1);
      if (rc == CKL_INSERT_DEDUP) atomic_fetch_add(&soak->chunks_dedup, 1);
    }
    if (rc < 0) {
      op_fail(w, OP_BACKUP, snap, rc, "chunk %d (seed %u) of archive %s", k, ar->seed[k], name);
      ckl_backup_archive_abort(arc);
      return rc;
    }
  }
  rc = ckl_backup_archive_close(arc);
  if (rc < 0) op_fail(w, OP_BACKUP, snap, rc, "archive_close %s", name);
  return rc;
}

static void op_backup(soak_worker *w) {
  int g = (int)soak_below(&w->rng, SOAK_GROUPS);
  ckl_group_name gn;
  soak_group_name(g, &gn);
  int64_t t = SOAK_T0 + atomic_fetch_add(&soak->groups[g].next_time, 1) * SOAK_TIME_STEP;
  ckl_holder who = {0};
  ckl_backup_opts o = {.time_s = t, .busy_holder = &who};
  o.proclock_timeout_ms = soak_below(&w->rng, 2) ? 20 : CKL_TRY;
  ckl_snapshot_name base_name;
  uint32_t c = soak_below(&w->rng, 100);
  if (c < 35) {
    o.flags = CKL_BACKUP_BASE_LATEST;
  } else if (c < 65) {
    /* an explicit base: a complete snapshot of this group, if any */
    soak_lock();
    for (int i = 0; i < SOAK_MAX_SNAPS; i++) {
      soak_snap *s = &soak->snaps[i];
      if (s->state == S_COMPLETE && s->group == g && (!o.base || soak_below(&w->rng, 3) == 0)) {
        soak_snap_name(g, s->time_s, &base_name);
        o.base = &base_name;
      }
    }
    soak_unlock();
  }
  ckl_snapshot_name sn;
  soak_snap_name(g, t, &sn);
  char snap[CKL_SNAP_NAME_MAX + 1];
  fmt_name(&sn, snap, sizeof snap);
  ckl_backup *b;
  int rc = ckl_backup_begin(w->st, &gn, &o, &b);
  if (rc != 0) {
    if (busy_answer(w, OP_BACKUP, snap, rc, &who)) return;
    if (rc == -ENOENT && o.base) { /* the explicit base was forgotten */
      count(OP_BACKUP, RES_ENOENT);
      return;
    }
    op_fail(w, OP_BACKUP, snap, rc, "backup_begin (base %s)", o.base ? o.base->time : "none");
    return;
  }
  /* The base's recipe, if the table knows it: its chunks get reused. */
  soak_recipe base_r;
  int have_base = 0;
  const ckl_snapshot_name *bn = ckl_backup_base(b);
  if (bn) {
    soak_lock();
    int i = soak_find_locked(bn);
    if (i >= 0 && soak->snaps[i].state == S_COMPLETE) {
      base_r = soak->snaps[i].r;
      have_base = 1;
    }
    soak_unlock();
  }
  plan p;
  make_plan(w, have_base ? &base_r : NULL, &p);
  /* In the table before the first chunk: if this process dies, the
   * coordinator finds the entry and settles it from the disk. */
  int slot = -1;
  uint32_t gen = 0;
  soak_lock();
  for (int i = 0; i < SOAK_MAX_SNAPS && slot < 0; i++) {
    soak_snap *s = &soak->snaps[i];
    if (s->state != S_FREE) continue;
    slot = i;
    s->gen++;
    gen = s->gen;
    s->group = (uint8_t)g;
    s->time_s = t;
    s->r = p.r;
    s->writer_pid = getpid();
    memset(s->forgetting, 0, sizeof s->forgetting);
    s->ctr_ok = s->ctr_pending = 0;
    s->state = S_WRITING;
  }
  soak_unlock();
  if (slot < 0) { /* table full: let forget and prune catch up */
    ckl_backup_abort(b);
    count(OP_BACKUP, RES_ABORTED);
    return;
  }
  int failed = 0;
  for (int a = 0; a < p.r.narch && !failed; a++) {
    if (a == p.abort_at) break;
    failed = write_archive(w, b, &p, a, snap) < 0;
  }
  if (failed || p.abort_at >= 0) {
    ckl_backup_abort(b);
    soak_lock();
    if (soak->snaps[slot].gen == gen) soak->snaps[slot].state = S_FREE;
    soak_unlock();
    if (!failed) count(OP_BACKUP, RES_ABORTED);
    return;
  }
  rc = ckl_backup_finish(b);
  soak_lock();
  if (soak->snaps[slot].gen == gen) soak->snaps[slot].state = rc == 0 ? S_COMPLETE : S_FREE;
  soak_unlock();
  if (rc != 0) {
    op_fail(w, OP_BACKUP, snap, rc, "backup_finish");
    return;
  }
  count(OP_BACKUP, RES_OK);
}

/* ---- read, verify, update ---------------------------------------------- */

static void op_read(soak_worker *w) {
  ckl_snapshot_name n;
  soak_recipe r;
  if (pick_snap(w, 0, &n, NULL, &r) < 0) return;
  char snap[CKL_SNAP_NAME_MAX + 1];
  fmt_name(&n, snap, sizeof snap);
  ckl_holder who = {0};
  ckl_reader_opts o = {.busy_holder = &who};
  ckl_reader *rd;
  int rc = ckl_reader_open(w->st, &n, &o, &rd);
  if (rc != 0) {
    if (busy_answer(w, OP_READ, snap, rc, &who)) return;
    if (rc == -ENOENT) { /* forgotten meanwhile: the checks tell a loss */
      count(OP_READ, RES_ENOENT);
      return;
    }
    op_fail(w, OP_READ, snap, rc, "reader_open");
    return;
  }
  if (ckl_reader_archive_count(rd) != r.narch) {
    op_fail(w, OP_READ, snap, 0, "%zu archives in the manifest, %d written",
            ckl_reader_archive_count(rd), r.narch);
    ckl_reader_close(rd);
    return;
  }
  for (int a = 0; a < r.narch; a++) {
    char name[32];
    soak_arch_name(&r.arch[a], a, name, sizeof name);
    ckl_reader_archive *ra;
    rc = ckl_reader_archive_open(rd, name, &ra);
    if (rc != 0) {
      op_fail(w, OP_READ, snap, rc, "reader_archive_open %s", name);
      break;
    }
    uint64_t size;
    unsigned char *want = soak_arch_bytes(&r.arch[a], &size);
    unsigned char *got = malloc(size + 1);
    uint64_t off = 0;
    if (ckl_reader_archive_size(ra) != size) {
      op_fail(w, OP_READ, snap, 0, "archive %s is %llu bytes, %llu written", name,
              (unsigned long long)ckl_reader_archive_size(ra), (unsigned long long)size);
      off = size + 1;
    }
    /* pieces of random size, so reads start and end inside chunks */
    while (off < size) {
      size_t want_n = 1 + soak_below(&w->rng, 9000);
      ssize_t n_read = ckl_reader_archive_read(ra, off, got + off,
                                               want_n < size - off ? want_n : (size_t)(size - off));
      if (n_read <= 0) {
        op_fail(w, OP_READ, snap, (int)n_read, "read of %s at %llu", name,
                (unsigned long long)off);
        break;
      }
      off += (uint64_t)n_read;
    }
    if (off == size && memcmp(want, got, size) != 0)
      op_fail(w, OP_READ, snap, 0, "archive %s differs from what the backup wrote", name);
    atomic_fetch_add(&soak->bytes_read, off);
    free(want);
    free(got);
    ckl_reader_archive_close(ra);
    if (atomic_load(&soak->failed)) break;
  }
  rc = ckl_reader_close(rd);
  if (rc != 0) op_fail(w, OP_READ, snap, rc, "reader_close");
  if (!atomic_load(&soak->failed)) count(OP_READ, RES_OK);
}

static void op_verify(soak_worker *w) {
  ckl_snapshot_name n;
  if (pick_snap(w, soak_below(&w->rng, 10) == 0, &n, NULL, NULL) < 0) return;
  char snap[CKL_SNAP_NAME_MAX + 1];
  fmt_name(&n, snap, sizeof snap);
  ckl_holder who = {0};
  ckl_verify_opts o = {.busy_holder = &who};
  ckl_verify_result res;
  int rc = ckl_verify(w->st, &n, &o, &res);
  if (rc == 0 && res.ok && res.bad_chunks == 0 && res.bad_files == 0) count(OP_VERIFY, RES_OK);
  else if (busy_answer(w, OP_VERIFY, snap, rc, &who)) return;
  else if (rc == -ENOENT) count(OP_VERIFY, RES_ENOENT);
  else
    op_fail(w, OP_VERIFY, snap, rc, "verify: %zu bad chunks, %zu bad files", res.bad_chunks,
            res.bad_files);
}

static int bump_counter(json_t *m, void *arg) {
  (void)arg;
  json_t *u = json_object_get(m, "unprotected");
  json_int_t v = json_integer_value(json_object_get(u, SOAK_COUNTER_KEY));
  return json_object_set_new(u, SOAK_COUNTER_KEY, json_integer(v + 1)) == 0 ? 0 : -ENOMEM;
}

/* Increment the snapshot's counter in "unprotected". The table counts the
 * increments that returned 0 (and those in flight, which a crash may or
 * may not have written): a lost update shows as a smaller counter. */
static void op_update(soak_worker *w) {
  ckl_snapshot_name n;
  uint32_t gen;
  int slot = pick_snap(w, 0, &n, &gen, NULL);
  if (slot < 0) return;
  char snap[CKL_SNAP_NAME_MAX + 1];
  fmt_name(&n, snap, sizeof snap);
  soak_lock();
  int mine = soak->snaps[slot].gen == gen;
  if (mine) soak->snaps[slot].ctr_pending++;
  soak_unlock();
  if (!mine) return;
  ckl_holder who = {0};
  ckl_manifest_update_opts o = {.busy_holder = &who, .operation = "soak-update"};
  o.timeout_ms = soak_below(&w->rng, 2) ? 50 : 0;
  int rc = ckl_update_manifest(w->st, &n, bump_counter, NULL, &o);
  soak_lock();
  if (soak->snaps[slot].gen == gen) {
    soak->snaps[slot].ctr_pending--;
    if (rc == 0) soak->snaps[slot].ctr_ok++;
  }
  soak_unlock();
  if (rc == 0) count(OP_UPDATE, RES_OK);
  else if (busy_answer(w, OP_UPDATE, snap, rc, &who)) return;
  else if (rc == -ENOENT) count(OP_UPDATE, RES_ENOENT);
  else op_fail(w, OP_UPDATE, snap, rc, "update_manifest");
}

/* ---- forget, prune, GC, with-lock ---------------------------------------- */

static void op_forget(soak_worker *w) {
  ckl_snapshot_name n;
  uint32_t gen;
  /* now and then one being written: it must be busy */
  int slot = pick_snap(w, soak_below(&w->rng, 8) == 0, &n, &gen, NULL);
  if (slot < 0) return;
  char snap[CKL_SNAP_NAME_MAX + 1];
  fmt_name(&n, snap, sizeof snap);
  soak_lock();
  if (soak->snaps[slot].gen == gen) soak->snaps[slot].forgetting[w->proc]++;
  soak_unlock();
  ckl_holder who = {0};
  ckl_forget_opts o = {.busy_holder = &who};
  int rc = ckl_forget(w->st, &n, &o);
  soak_lock();
  if (soak->snaps[slot].gen == gen) {
    soak->snaps[slot].forgetting[w->proc]--;
    if (rc >= 0) {
      soak->snaps[slot].state = S_FREE;
      soak->snaps[slot].gen++;
    }
  }
  soak_unlock();
  if (rc >= 0) count(OP_FORGET, RES_OK);
  else if (busy_answer(w, OP_FORGET, snap, rc, &who)) return;
  else if (rc == -ENOENT) count(OP_FORGET, RES_ENOENT);
  else op_fail(w, OP_FORGET, snap, rc, "forget");
}

static void op_prune(soak_worker *w) {
  int g = (int)soak_below(&w->rng, SOAK_GROUPS);
  ckl_group_name gn;
  soak_group_name(g, &gn);
  char grp[CKL_SNAP_NAME_MAX + 1];
  snprintf(grp, sizeof grp, "%s/%s", gn.type, gn.id);
  ckl_holder who = {0};
  ckl_prune_opts o = {.busy_holder = &who};
  o.keep_last = 2 + soak_below(&w->rng, 4);
  if (soak_below(&w->rng, 3) == 0) o.keep_hourly = 1 + soak_below(&w->rng, 3);
  if (soak_below(&w->rng, 4) == 0) o.keep_daily = 1 + soak_below(&w->rng, 2);
  o.dry_run = soak_below(&w->rng, 10) == 0;
  soak_lock();
  soak->groups[g].pruning[w->proc]++;
  soak_unlock();
  ckl_prune_item *items = NULL;
  size_t n = 0;
  int rc = ckl_prune(w->st, &gn, &o, &items, &n);
  for (size_t i = 0; i < n && !o.dry_run; i++) {
    if (items[i].keep) continue;
    char snap[CKL_SNAP_NAME_MAX + 1];
    fmt_name(&items[i].name, snap, sizeof snap);
    if (items[i].rc == 0 || items[i].rc == -ENOENT) snap_gone(&items[i].name);
    else if (items[i].rc != CKL_EBUSY)
      op_fail(w, OP_PRUNE, snap, items[i].rc, "prune's removal (%s)",
              ckl_prune_reason_name(items[i].reason));
  }
  free(items);
  soak_lock();
  soak->groups[g].pruning[w->proc]--;
  soak_unlock();
  if (rc == 0) count(OP_PRUNE, o.dry_run ? RES_DRYRUN : RES_OK);
  else if (busy_answer(w, OP_PRUNE, grp, rc, &who)) return;
  else if (rc == -ENOENT) count(OP_PRUNE, RES_ENOENT); /* nothing backed up yet */
  else if (!atomic_load(&soak->failed)) op_fail(w, OP_PRUNE, grp, rc, "prune");
}

/*
 * Crash mode only: a forget killed between its rename to .trash and the
 * commit of its removed-set record (state.forget.before_commit) leaves a
 * snapshot that vanished during a GC's mark without being "forgotten" for
 * the GC. The GC then aborts before sweeping (CKL_EGCABORT): the safe
 * answer of datastore/forget.c, "never a wrong sweep". Accepted only when
 * the log names the snapshot and its crashed forget's copy is in .trash;
 * any other abort is a failure.
 */
static int gc_abort_from_crashed_forget(void) {
  static const char pre[] = "index files of ", post[] = " vanished during the mark";
  if (!soak->crash) return 0;
  const char *a = strstr(tl_log, pre), *b = a ? strstr(a, post) : NULL;
  if (!a || !b) return 0;
  a += sizeof pre - 1;
  char name[256], trash[PATH_MAX + 16];
  if ((size_t)(b - a) >= sizeof name) return 0;
  memcpy(name, a, (size_t)(b - a));
  name[b - a] = '\0';
  for (char *c = name; *c; c++)
    if (*c == '/') *c = '-'; /* type/id/time -> the trash entry's prefix */
  snprintf(trash, sizeof trash, "%s/.trash", soak->store);
  DIR *d = opendir(trash);
  if (!d) return 0;
  int found = 0;
  for (struct dirent *e; !found && (e = readdir(d));)
    found = strncmp(e->d_name, name, strlen(name)) == 0 && e->d_name[strlen(name)] == '-';
  closedir(d);
  return found;
}

static void op_gc(soak_worker *w, int strict) {
  soak_op op = strict ? OP_GC_STRICT : OP_GC;
  ckl_holder who = {0};
  ckl_gc_opts o = {.exclusive = strict, .busy_holder = &who, .threads = 1};
  o.wait_ms = soak_below(&w->rng, 2) ? 20 : CKL_TRY;
  o.dry_run = soak_below(&w->rng, 10) == 0;
  ckl_gc_result res;
  int rc = ckl_gc_run(w->st, &o, &res);
  if (rc == 0) {
    count(op, o.dry_run ? RES_DRYRUN : RES_OK);
    if (!o.dry_run) {
      atomic_fetch_add(&soak->gc_removed_chunks, res.removed_chunks);
      atomic_fetch_add(&soak->gc_removed_set, res.removed_set_snapshots);
    }
  } else if (rc == CKL_EGCABORT && gc_abort_from_crashed_forget()) {
    count(op, RES_ABORTED);
  } else if (!busy_answer(w, op, NULL, rc, &who)) {
    op_fail(w, op, NULL, rc, "gc_run%s", o.dry_run ? " (dry run)" : "");
  }
}

/* with-lock: while a freeze is held nothing may be deleted. The soak
 * checks it: complete snapshots present when the freeze was taken, and
 * their chunks, are all still there when it is released. */
static void op_freeze(soak_worker *w, int excl) {
  soak_op op = excl ? OP_FREEZE_EXCL : OP_FREEZE;
  ckl_holder who = {0};
  ckl_freeze_opts o = {.busy_holder = &who};
  o.timeout_ms = soak_below(&w->rng, 2) ? 20 : CKL_TRY;
  ckl_freeze f = {0};
  int rc = ckl_freeze_acquire(w->st, excl ? CKL_FREEZE_EXCLUSIVE : CKL_FREEZE_SHARED, &f, &o);
  if (rc != 0) {
    if (!busy_answer(w, op, NULL, rc, &who)) op_fail(w, op, NULL, rc, "freeze_acquire");
    return;
  }
  enum { K = 4 };
  ckl_snapshot_name n[K];
  soak_recipe r[K];
  char path[K][PATH_MAX];
  int have[K];
  for (int k = 0; k < K; k++) {
    have[k] = pick_snap(w, 0, &n[k], NULL, &r[k]) >= 0;
    if (!have[k]) continue;
    char dir[PATH_MAX];
    if (ckl_snapshot_path(w->st, &n[k], dir, sizeof dir) < 0) abort();
    snprintf(path[k], sizeof path[k], "%.4000s/%s", dir, CKL_MANIFEST_NAME);
    struct stat sb;
    have[k] = stat(path[k], &sb) == 0; /* forgotten before the freeze: fine */
  }
  usleep(1000 * (1 + soak_below(&w->rng, 10))); /* what an outside tool would do meanwhile */
  for (int k = 0; k < K && !atomic_load(&soak->failed); k++) {
    if (!have[k]) continue;
    char snap[CKL_SNAP_NAME_MAX + 1];
    fmt_name(&n[k], snap, sizeof snap);
    struct stat sb;
    if (stat(path[k], &sb) != 0) {
      op_fail(w, op, snap, -errno, "snapshot deleted while the store was frozen");
      break;
    }
    for (int a = 0; a < r[k].narch; a++)
      for (int c = 0; c < r[k].arch[a].n; c++) {
        unsigned char buf[SOAK_FIXED + 64];
        const soak_arch *ar = &r[k].arch[a];
        size_t len = soak_chunk_len(ar->seed[c], ar->fixed, c == ar->n - 1);
        soak_chunk_fill(ar->seed[c], buf, len);
        ckl_digest d;
        ckl_digest_compute(buf, len, &d);
        char rel[80], cp[PATH_MAX];
        ckl_chunk_relpath(&d, rel, sizeof rel);
        snprintf(cp, sizeof cp, "%.3000s/.chunks/%s", soak->store, rel);
        if (stat(cp, &sb) != 0) {
          op_fail(w, op, snap, -errno, "chunk %s of a snapshot missing while frozen", rel);
          a = r[k].narch;
          break;
        }
      }
  }
  atomic_fetch_add(&soak->freeze_checks, 1);
  ckl_freeze_release(&f);
  if (!atomic_load(&soak->failed)) count(op, RES_OK);
}

/* ---- the loop ------------------------------------------------------------- */

static const unsigned weights[OP_N] = {
    [OP_BACKUP] = 26, [OP_READ] = 14, [OP_VERIFY] = 8, [OP_UPDATE] = 18, [OP_FORGET] = 7,
    [OP_PRUNE] = 7,   [OP_GC] = 6,    [OP_GC_STRICT] = 3, [OP_FREEZE] = 4, [OP_FREEZE_EXCL] = 2};

static soak_op pick_op(soak_worker *w) {
  unsigned total = 0;
  for (int i = 0; i < OP_N; i++) total += weights[i];
  unsigned x = soak_below(&w->rng, total);
  for (int i = 0; i < OP_N; i++) {
    if (x < weights[i]) return (soak_op)i;
    x -= weights[i];
  }
  return OP_BACKUP;
}

/* An op starts: record, for every other worker in an op, the pair (its op
 * at the failpoint it passed last, this op). */
static void op_begin(soak_worker *w, soak_op op) {
  int nw = soak->procs * soak->threads;
  for (int s = 0; s < nw; s++) {
    if (s == w->slot) continue;
    int a = atomic_load(&soak->cur_op[s]);
    int x = atomic_load(&soak->cur_fp[s]);
    if (a < 0 || a >= OP_N || x < 0 || x >= SOAK_FP_MAX) continue;
    atomic_store(&soak->inter[a][x][op], 1);
  }
  atomic_store(&soak->cur_fp[w->slot], -1);
  atomic_store(&soak->cur_op[w->slot], (int)op);
  tl_log_len = 0;
  tl_log[0] = '\0';
}

static void op_end(soak_worker *w) { atomic_store(&soak->cur_op[w->slot], -1); }

void soak_worker_run(soak_worker *w) {
  tl_worker = w;
  while (!atomic_load(&soak->stop)) {
    int g = atomic_load(&soak->pause_gen);
    if (g & 1) {
      atomic_store(&soak->parked[w->slot], g);
      while (atomic_load(&soak->pause_gen) == g && !atomic_load(&soak->stop)) usleep(500);
      continue;
    }
    chaos(w);
    soak_op op = pick_op(w);
    op_begin(w, op);
    switch (op) {
      case OP_BACKUP: op_backup(w); break;
      case OP_READ: op_read(w); break;
      case OP_VERIFY: op_verify(w); break;
      case OP_UPDATE: op_update(w); break;
      case OP_FORGET: op_forget(w); break;
      case OP_PRUNE: op_prune(w); break;
      case OP_GC: op_gc(w, 0); break;
      case OP_GC_STRICT: op_gc(w, 1); break;
      case OP_FREEZE: op_freeze(w, 0); break;
      case OP_FREEZE_EXCL: op_freeze(w, 1); break;
      default: break;
    }
    op_end(w);
  }
  atomic_store(&soak->parked[w->slot], -1); /* gone: never in the way of a pause */
  tl_worker = NULL;
}

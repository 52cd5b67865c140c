/*
 * datastore/state_gc.c - gc_active, the running GC's token and phase-1
 * start, and the removed-during-GC set: the LMDB half of the GC and forget
 * protocols (DESIGN.md section 5, docs/state.md).
 *
 * The invariant everything here keeps: a snapshot forgotten while a GC
 * marks is either in the removed set before that GC's final check, or the
 * forget happened after gc_active was cleared. Both sides are single LMDB
 * write transactions, and LMDB runs write transactions one at a time
 * across all processes, so there is no "in between":
 *
 *   forget:  [ read gc_active -> rename to .trash -> if active: add entry ]
 *   GC end:  [ no unmarked entries? -> clear gc_active ]
 *
 * If the forget's transaction commits first, the GC's sees the entry and
 * hands it out for marking instead of clearing. If the GC's commits first,
 * the forget reads gc_active == 0 and may delete at once: the GC is past
 * marking and its cutoff predates anything the snapshot's chunks need.
 *
 * A dry-run GC (CKL__GC_DRY_RUN in its record) sweeps nothing, so no
 * forget has to keep a copy for it: the forget still adds its entry, in
 * the same transaction as the rename, so the dry run's mark can tell a
 * forgotten index from a damaged one (G1 in gc/gc.c), but adds it settled:
 * never handed out for marking, the copy deleted by the forget at once.
 * The dry run then counts the snapshot's chunks as garbage, which is what
 * a real GC starting now would free. The flag is written by gc_begin and
 * read by forget, each in one write transaction, and only a gc_begin
 * (under the GC lock) changes it: a forget cannot settle an entry for a
 * GC that will sweep.
 */
#include <stdlib.h>
#include <string.h>

#include "datastore/state_int.h"

/* ---- encodings ----------------------------------------------------------
 * GC record: magic, version 1, a u16 of flags (GC_ACTIVE, GC_DRY), phase1
 * start, began, token. Removed-set value: magic, version 1, the entry's
 * CKL__RM_* state, a zero byte. A chunklock from before dry runs were
 * recorded reads a GC_DRY record or a settled entry as undecodable, which
 * it treats the safe way: forget keeps its copy, a GC aborts. */

#define GC_MAGIC 0x474c4b43u /* "CKLG" */
#define GC_VERSION 1u
#define GC_ACTIVE 1u
#define GC_DRY 2u /* CKL__GC_DRY_RUN: kept after the run ends, for gc_info */
#define GC_LEN (24u + CKL_TOKEN_HEX_LEN)
#define RM_MAGIC 0x444c4b43u /* "CKLD" */
#define RM_VERSION 1u
#define RM_LEN 8u
#define REL_MAX 255u /* snapshot_rel '\0' trash_rel fits LMDB's 511-byte keys */

typedef struct gc_rec {
  int active;
  int dry_run;
  int64_t phase1_start_ns;
  int64_t began_ns;
  char token[CKL_TOKEN_HEX_LEN + 1];
} gc_rec;

static const MDB_val gc_key = {2, "gc"};

static void gc_encode(const gc_rec *r, unsigned char out[GC_LEN]) {
  ckl__put_u32(out, GC_MAGIC);
  ckl__put_u16(out + 4, GC_VERSION);
  ckl__put_u16(out + 6, (uint16_t)((r->active ? GC_ACTIVE : 0) | (r->dry_run ? GC_DRY : 0)));
  ckl__put_u64(out + 8, (uint64_t)r->phase1_start_ns);
  ckl__put_u64(out + 16, (uint64_t)r->began_ns);
  memcpy(out + 24, r->token, CKL_TOKEN_HEX_LEN);
}

static int gc_decode(const MDB_val *v, gc_rec *r) {
  const unsigned char *p = v->mv_data;
  if (v->mv_size != GC_LEN || ckl__get_u32(p) != GC_MAGIC) return CKL_ECORRUPT;
  if (ckl__get_u16(p + 4) != GC_VERSION) return CKL_EVERSION;
  uint16_t flags = ckl__get_u16(p + 6);
  if ((flags & ~(GC_ACTIVE | GC_DRY)) || !ckl__token_valid((const char *)p + 24, CKL_TOKEN_HEX_LEN))
    return CKL_ECORRUPT;
  r->active = (flags & GC_ACTIVE) != 0;
  r->dry_run = (flags & GC_DRY) != 0;
  r->phase1_start_ns = (int64_t)ckl__get_u64(p + 8);
  r->began_ns = (int64_t)ckl__get_u64(p + 16);
  memcpy(r->token, p + 24, CKL_TOKEN_HEX_LEN);
  r->token[CKL_TOKEN_HEX_LEN] = '\0';
  return 0;
}

/* Read the GC record: 0 (found), -ENOENT (no GC ever ran in this state),
 * CKL_ECORRUPT / CKL_EVERSION (undecodable), other errors. */
static int gc_get(ckl__txn *t, gc_rec *r) {
  MDB_val k = gc_key, v;
  int rc = mdb_get(t->txn, t->e->dbi_gc, &k, &v);
  if (rc) return ckl__mdb_err(t, rc, "reading the GC state");
  rc = gc_decode(&v, r);
  if (rc < 0)
    ckl__log_warn("coordination state %s: the GC record does not decode (%zu bytes)",
                  t->e->data_path, v.mv_size);
  return rc;
}

static int gc_put(ckl__txn *t, const gc_rec *r) {
  unsigned char buf[GC_LEN];
  gc_encode(r, buf);
  MDB_val k = gc_key, v = {GC_LEN, buf};
  return ckl__mdb_err(t, mdb_put(t->txn, t->e->dbi_gc, &k, &v, 0), "writing the GC state");
}

/* Split a removed-set key "snapshot\0trash". 0 or CKL_ECORRUPT. */
static int rm_key_split(const MDB_val *k, size_t *snap_len, const char **trash, size_t *trash_len) {
  const char *p = k->mv_data;
  const char *nul = memchr(p, '\0', k->mv_size);
  if (!nul || nul == p || (size_t)(nul - p) + 1 >= k->mv_size) return CKL_ECORRUPT;
  *snap_len = (size_t)(nul - p);
  *trash = nul + 1;
  *trash_len = k->mv_size - *snap_len - 1;
  if (memchr(*trash, '\0', *trash_len)) return CKL_ECORRUPT;
  return 0;
}

static int rm_decode(const MDB_val *v, int *marked) {
  const unsigned char *p = v->mv_data;
  if (v->mv_size != RM_LEN || ckl__get_u32(p) != RM_MAGIC || ckl__get_u16(p + 4) != RM_VERSION ||
      p[6] > CKL__RM_SETTLED || p[7] != 0)
    return CKL_ECORRUPT;
  *marked = p[6];
  return 0;
}

static void rm_encode(int marked, unsigned char out[RM_LEN]) {
  ckl__put_u32(out, RM_MAGIC);
  ckl__put_u16(out + 4, RM_VERSION);
  out[6] = (unsigned char)marked;
  out[7] = 0;
}

void ckl__removed_list_free(ckl__removed_list *l) {
  if (!l) return;
  for (size_t i = 0; i < l->n; i++) {
    free(l->v[i].snapshot_rel);
    free(l->v[i].trash_rel);
  }
  free(l->v);
  l->v = NULL;
  l->n = 0;
}

static int rm_push(ckl__removed_list *l, size_t *cap, const MDB_val *k, int marked) {
  size_t sl, tl;
  const char *trash;
  if (rm_key_split(k, &sl, &trash, &tl) < 0) return CKL_ECORRUPT;
  if (l->n == *cap) {
    size_t ncap = *cap ? *cap * 2 : 16;
    ckl__removed_item *nv = realloc(l->v, ncap * sizeof *nv);
    if (!nv) return -ENOMEM;
    l->v = nv;
    *cap = ncap;
  }
  ckl__removed_item *it = &l->v[l->n];
  it->snapshot_rel = strndup(k->mv_data, sl);
  it->trash_rel = strndup(trash, tl);
  it->marked = marked;
  l->n++;
  if (!it->snapshot_rel || !it->trash_rel) return -ENOMEM;
  return 0;
}

/* ---- gc_begin ------------------------------------------------------------ */

struct begin_ctx {
  const char *token;
  int64_t now;
  unsigned flags;
  ckl__gc_begin_info *info;
};

static int gc_begin_txn(ckl__txn *t, void *arg) {
  struct begin_ctx *c = arg;
  ckl__gc_begin_info *in = c->info;
  memset(in, 0, sizeof *in); /* the body may be replayed after map growth */
  gc_rec old;
  int rc = gc_get(t, &old);
  if (rc == 0 && old.active) {
    in->recovered = 1;
    ckl__log_warn("coordination state %s: GC %s%s (phase 1 from %lld) never finished: "
                  "taking over its state", t->e->data_path, old.token,
                  old.dry_run ? " (a dry run)" : "", (long long)old.phase1_start_ns);
  } else if (rc == CKL_ECORRUPT || rc == CKL_EVERSION) {
    in->recovered = 1; /* overwritten below */
  } else if (rc < 0 && rc != -ENOENT) {
    return rc;
  }

  /* A removed set that is not empty here belongs to a GC that died or was
   * abandoned without gc_end. Clearing it is safe: we hold the GC lock, so
   * no other GC runs and nobody will mark those entries; the snapshots they
   * name were forgotten and stay in .trash until a GC purges it; our own
   * mark lists indexes only after this transaction, when those snapshots
   * are already gone from the namespace, so none of them can be an index
   * that "vanishes" under our mark. */
  MDB_stat ms;
  if ((rc = mdb_stat(t->txn, t->e->dbi_removed, &ms)))
    return ckl__mdb_err(t, rc, "reading the removed set");
  in->stale_removed = ms.ms_entries;
  if (ms.ms_entries > 0 && (rc = mdb_drop(t->txn, t->e->dbi_removed, 0)))
    return ckl__mdb_err(t, rc, "clearing a stale removed set");

  /* Reap dead holders, then the oldest writer among those left, in this
   * transaction: a writer that registers after it commits starts after
   * phase1_start, so min(phase1_start, oldest) bounds every writer. */
  int64_t now = c->now ? c->now : ckl__now_realtime_ns();
  rc = ckl__roster_reap_txn(t, now, &in->reaped, &in->oldest_writer_start_ns, &in->writers,
                            &in->unparseable);
  if (rc < 0) return rc;

  gc_rec r = {.active = 1,
              .dry_run = (c->flags & CKL__GC_DRY_RUN) != 0,
              .phase1_start_ns = now,
              .began_ns = ckl__now_realtime_ns()};
  memcpy(r.token, c->token, sizeof r.token);
  if ((rc = gc_put(t, &r)) < 0) return rc;
  in->phase1_start_ns = now;
  return CKL_FAILPOINT("state.gc_begin.before_commit");
}

int ckl__state_gc_begin(ckl__state *st, const char *gc_token, int64_t now_ns, unsigned flags,
                        ckl__gc_begin_info *info) {
  if (!gc_token || !ckl__token_valid(gc_token, strlen(gc_token)) || !info ||
      (flags & ~CKL__GC_DRY_RUN))
    return -EINVAL;
  struct begin_ctx c = {gc_token, now_ns, flags, info};
  int rc = ckl__state_run(st, 1, gc_begin_txn, &c);
  if (rc < 0) return rc;
  if (info->unparseable > 0)
    ckl__log_warn("coordination state of %s: %d unparseable roster record(s) count as "
                  "writers from time 0: this GC will sweep nothing (remove them with "
                  "`chunklock locks`)", gc_token, info->unparseable);
  return CKL_FAILPOINT("state.gc_begin.after_commit");
}

/* ---- forget ---------------------------------------------------------------- */

struct forget_ctx {
  const char *snap, *trash;
  ckl__forget_fn fn;
  void *arg;
};

static int forget_txn(ckl__txn *t, void *arg) {
  struct forget_ctx *c = arg;
  gc_rec g;
  int verdict;
  int rc = gc_get(t, &g);
  if (rc == 0 && g.active) verdict = g.dry_run ? CKL__FORGET_DRY_GC : CKL__FORGET_KEEP;
  else if (rc == 0 || rc == -ENOENT) verdict = CKL__FORGET_NO_GC;
  else if (rc == CKL_ECORRUPT || rc == CKL_EVERSION) verdict = CKL__FORGET_KEEP; /* unknown */
  else return rc;

  if (verdict != CKL__FORGET_NO_GC) {
    /* The entry goes in before the rename: a full map surfaces here, where
     * the body can still be replayed, not after the irrevocable step. */
    size_t sl = strlen(c->snap), tl = strlen(c->trash);
    char key[2 * REL_MAX + 1];
    memcpy(key, c->snap, sl);
    key[sl] = '\0';
    memcpy(key + sl + 1, c->trash, tl);
    unsigned char val[RM_LEN];
    /* Settled: the dry run must not go looking for a copy its forget is
     * free to delete the moment this transaction commits. */
    rm_encode(verdict == CKL__FORGET_DRY_GC ? CKL__RM_SETTLED : CKL__RM_UNMARKED, val);
    MDB_val k = {sl + 1 + tl, key}, v = {RM_LEN, val};
    if ((rc = mdb_put(t->txn, t->e->dbi_removed, &k, &v, 0)))
      return ckl__mdb_err(t, rc, "adding to the removed set");
  }
  if ((rc = CKL_FAILPOINT("state.forget.before_move")) < 0) return rc;
  t->no_retry = 1;
  /* The move happens while we hold LMDB's writer mutex: no GC transaction
   * can flip gc_active between our read above and the commit below. */
  rc = c->fn(c->arg, verdict);
  if (rc < 0) return rc; /* aborted: the entry (if any) is dropped */
  if ((rc = CKL_FAILPOINT("state.forget.before_commit")) < 0) return rc;
  return verdict;
}

int ckl__state_forget_txn(ckl__state *st, const char *snapshot_rel, const char *trash_rel,
                          ckl__forget_fn fn, void *arg) {
  if (!fn || !snapshot_rel || !trash_rel || !snapshot_rel[0] || !trash_rel[0] ||
      snapshot_rel[0] == '/' || trash_rel[0] == '/')
    return -EINVAL;
  if (strlen(snapshot_rel) > REL_MAX || strlen(trash_rel) > REL_MAX) return -ENAMETOOLONG;
  struct forget_ctx c = {snapshot_rel, trash_rel, fn, arg};
  int rc = ckl__state_run(st, 1, forget_txn, &c);
  if (rc < 0) return rc;
  int frc = CKL_FAILPOINT("state.forget.after_commit");
  return frc < 0 ? frc : rc;
}

/* ---- the mark loop's end ------------------------------------------------------ */

/* The GC record for a call made by GC `token`: 0 with *r; CKL_ELOCKLOST if
 * there is none (the state was recreated under the GC: forgets since then
 * were not recorded) or it names another GC (ours was taken over). */
static int gc_own(ckl__txn *t, const char *token, gc_rec *r) {
  int rc = gc_get(t, r);
  if (rc == -ENOENT || (rc == 0 && strcmp(r->token, token) != 0)) {
    ckl__log_error("coordination state %s: the GC state no longer belongs to GC %s",
                   t->e->data_path, token);
    return CKL_ELOCKLOST;
  }
  return rc;
}

struct take_ctx {
  const char *token;
  ckl__removed_list *out;
};

static int take_txn(ckl__txn *t, void *arg) {
  struct take_ctx *c = arg;
  ckl__removed_list_free(c->out);
  size_t cap = 0;
  gc_rec g;
  int rc = gc_own(t, c->token, &g);
  if (rc < 0) return rc;
  if (!g.active) return 0;
  MDB_cursor *cur;
  if ((rc = mdb_cursor_open(t->txn, t->e->dbi_removed, &cur)))
    return ckl__mdb_err(t, rc, "opening a removed-set cursor");
  MDB_val k, v;
  int err = 0;
  while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
    int marked;
    if (rm_decode(&v, &marked) < 0) {
      ckl__log_error("coordination state %s: a removed-set entry does not decode: the GC "
                     "cannot know what to mark", t->e->data_path);
      err = CKL_ECORRUPT;
      break;
    }
    if (marked != CKL__RM_UNMARKED) continue; /* handed out before, or settled */
    if ((err = rm_push(c->out, &cap, &k, CKL__RM_UNMARKED)) < 0) break;
    unsigned char val[RM_LEN];
    rm_encode(CKL__RM_MARKED, val);
    MDB_val nv = {RM_LEN, val};
    if ((rc = mdb_cursor_put(cur, &k, &nv, MDB_CURRENT))) break;
  }
  mdb_cursor_close(cur);
  if (err < 0) return err;
  if (rc != MDB_NOTFOUND) return ckl__mdb_err(t, rc, "handing out removed-set entries");
  if (c->out->n > 0) return (int)c->out->n;

  /* Nothing unmarked: end the mark phase in this same transaction. A
   * forget is now either committed (and was handed out in an earlier
   * call) or will read gc_active == 0. */
  if ((rc = CKL_FAILPOINT("state.removed.before_clear_active")) < 0) return rc;
  g.active = 0;
  return gc_put(t, &g);
}

int ckl__state_removed_take_unmarked(ckl__state *st, const char *gc_token,
                                     ckl__removed_list *out) {
  if (!gc_token || !ckl__token_valid(gc_token, strlen(gc_token)) || !out) return -EINVAL;
  memset(out, 0, sizeof *out);
  struct take_ctx c = {gc_token, out};
  int rc = ckl__state_run(st, 1, take_txn, &c);
  if (rc < 0) {
    ckl__removed_list_free(out);
    return rc;
  }
  return rc;
}

/* ---- lookups ---------------------------------------------------------------------- */

static int is_removed_txn(ckl__txn *t, void *arg) {
  const char *snap = arg;
  size_t sl = strlen(snap);
  char key[REL_MAX + 1];
  memcpy(key, snap, sl);
  key[sl] = '\0';
  MDB_cursor *cur;
  int rc = mdb_cursor_open(t->txn, t->e->dbi_removed, &cur);
  if (rc) return ckl__mdb_err(t, rc, "opening a removed-set cursor");
  MDB_val k = {sl + 1, key}, v;
  rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
  int found = rc == 0 && k.mv_size > sl + 1 && memcmp(k.mv_data, key, sl + 1) == 0;
  mdb_cursor_close(cur);
  if (rc && rc != MDB_NOTFOUND) return ckl__mdb_err(t, rc, "looking up the removed set");
  return found;
}

int ckl__state_is_removed(ckl__state *st, const char *snapshot_rel) {
  if (!snapshot_rel || !snapshot_rel[0]) return -EINVAL;
  if (strlen(snapshot_rel) > REL_MAX) return 0; /* never added: too long for a key */
  /* A write transaction on purpose: it cannot begin while a forget holds
   * the writer mutex, so a rename the mark phase already saw is never
   * judged before its entry commits (which would abort the GC for
   * nothing). It commits no change. */
  return ckl__state_run(st, 1, is_removed_txn, (void *)snapshot_rel);
}

static int removed_list_txn(ckl__txn *t, void *arg) {
  ckl__removed_list *out = arg;
  ckl__removed_list_free(out);
  size_t cap = 0;
  MDB_cursor *cur;
  int rc = mdb_cursor_open(t->txn, t->e->dbi_removed, &cur);
  if (rc) return ckl__mdb_err(t, rc, "opening a removed-set cursor");
  MDB_val k, v;
  int err = 0;
  while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
    int marked = CKL__RM_UNMARKED;
    /* An undecodable value still names a trashed snapshot in its key:
     * list it (as unmarked) so the purge can remove it. */
    if (rm_decode(&v, &marked) < 0) marked = CKL__RM_UNMARKED;
    if ((err = rm_push(out, &cap, &k, marked)) < 0) break;
  }
  mdb_cursor_close(cur);
  if (err < 0) return err;
  return rc == MDB_NOTFOUND ? 0 : ckl__mdb_err(t, rc, "listing the removed set");
}

int ckl__state_removed_list(ckl__state *st, ckl__removed_list *out) {
  if (!out) return -EINVAL;
  memset(out, 0, sizeof *out);
  int rc = ckl__state_run(st, 0, removed_list_txn, out);
  if (rc < 0) ckl__removed_list_free(out);
  return rc;
}

/* ---- gc_end / gc_abort ---------------------------------------------------------------- */

struct end_ctx {
  const char *token;
  int abort;
};

static int gc_end_txn(ckl__txn *t, void *arg) {
  struct end_ctx *c = arg;
  gc_rec g;
  MDB_val k = gc_key, v;
  if (c->abort && mdb_get(t->txn, t->e->dbi_gc, &k, &v) == MDB_NOTFOUND)
    return 0; /* nothing to abandon: the GC never began (or the state is new) */
  int rc = gc_own(t, c->token, &g);
  if (rc < 0) return rc;
  rc = c->abort ? CKL_FAILPOINT("state.gc_abort.before_commit")
                : CKL_FAILPOINT("state.gc_end.before_commit");
  if (rc < 0) return rc;
  if ((rc = mdb_drop(t->txn, t->e->dbi_removed, 0)))
    return ckl__mdb_err(t, rc, "clearing the removed set");
  g.active = 0;
  return gc_put(t, &g);
}

int ckl__state_gc_end(ckl__state *st, const char *gc_token) {
  if (!gc_token || !ckl__token_valid(gc_token, strlen(gc_token))) return -EINVAL;
  struct end_ctx c = {gc_token, 0};
  return ckl__state_run(st, 1, gc_end_txn, &c);
}

int ckl__state_gc_abort(ckl__state *st, const char *gc_token) {
  if (!gc_token || !ckl__token_valid(gc_token, strlen(gc_token))) return -EINVAL;
  struct end_ctx c = {gc_token, 1};
  int rc = ckl__state_run(st, 1, gc_end_txn, &c);
  if (rc == 0) ckl__log_info("GC %s abandoned: gc_active and the removed set cleared", gc_token);
  return rc;
}

/* ---- status ---------------------------------------------------------------------------- */

static int gc_info_txn(ckl__txn *t, void *arg) {
  ckl__gc_info *out = arg;
  memset(out, 0, sizeof *out);
  gc_rec g;
  int rc = gc_get(t, &g);
  if (rc == 0) {
    out->active = g.active;
    out->dry_run = g.dry_run;
    memcpy(out->token, g.token, sizeof out->token);
    out->phase1_start_ns = g.phase1_start_ns;
    out->began_ns = g.began_ns;
  } else if (rc == CKL_ECORRUPT || rc == CKL_EVERSION) {
    out->unparseable = 1;
    out->active = 1; /* what forget assumes too */
  } else if (rc != -ENOENT) {
    return rc;
  }
  MDB_cursor *cur;
  if ((rc = mdb_cursor_open(t->txn, t->e->dbi_removed, &cur)))
    return ckl__mdb_err(t, rc, "opening a removed-set cursor");
  MDB_val k, v;
  while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
    int marked = CKL__RM_UNMARKED;
    out->removed++;
    if (rm_decode(&v, &marked) < 0 || marked == CKL__RM_UNMARKED) out->unmarked++;
  }
  mdb_cursor_close(cur);
  return rc == MDB_NOTFOUND ? 0 : ckl__mdb_err(t, rc, "reading the removed set");
}

int ckl__state_gc_info(ckl__state *st, ckl__gc_info *out) {
  if (!out) return -EINVAL;
  return ckl__state_run(st, 0, gc_info_txn, out);
}

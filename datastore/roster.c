/*
 * datastore/roster.c - the roster of active holders: record encoding,
 * register / deregister / refresh, listing with reap-on-sight, holder
 * lookup for CKL_EBUSY messages, and the public chunklock/roster.h API.
 *
 * Staleness is decided by the reader of a record, never by its writer:
 *   local   (same host id, boot id and pid namespace as the reader): stale
 *           iff its process is provably dead (gone, zombie, pid reused).
 *           Leases are ignored: a live local process is never reaped, and
 *           a holder never loses its record to its own lease.
 *   foreign stale iff its lease expired before "now". Without a lease it
 *           never expires (an admin removes it).
 *   unparseable: never stale. Unreadable holder metadata counts as held.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "datastore/proc_identity.h"
#include "datastore/state_int.h"

/* ---- encoding ----------------------------------------------------------- */

#define REC_MAGIC 0x524c4b43u /* "CKLR" */
#define REC_VERSION 1u
#define REC_HDR 64u
#define REC_FLAGS_KNOWN (CKL_ROSTER_WRITER | CKL_ROSTER_EXCLUSIVE)

enum { S_HOST, S_BOOT, S_HOSTNAME, S_OP, S_TARGET, S_N };
static const size_t str_max[S_N] = {CKL__HOST_ID_MAX, CKL__BOOT_ID_MAX, CKL__HOSTNAME_MAX, 31,
                                    4095};
static const size_t str_min[S_N] = {0, 0, 0, 1, 0};

/* Identity strings are printable ASCII; a target is a path: anything but
 * control characters (UTF-8 allowed). */
static int str_ok(int which, const unsigned char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (s[i] < 0x20 || s[i] == 0x7f) return 0;
    if (which != S_TARGET && s[i] > 0x7e) return 0;
  }
  return 1;
}

int ckl__roster_decode(const void *buf, size_t len, ckl__roster_view *v, const char **why) {
  const unsigned char *p = buf;
  const char *dummy;
  if (!why) why = &dummy;
  *why = "";
  if (!p || len < REC_HDR) return *why = "shorter than the record header", CKL_ECORRUPT;
  if (ckl__get_u32(p) != REC_MAGIC) return *why = "bad magic", CKL_ECORRUPT;
  if (ckl__get_u16(p + 4) != REC_VERSION)
    return *why = "unknown record version (newer chunklock?)", CKL_EVERSION;
  if (ckl__get_u16(p + 6) != REC_HDR) return *why = "bad header length", CKL_ECORRUPT;
  uint32_t flags = ckl__get_u32(p + 8);
  if ((flags & ~REC_FLAGS_KNOWN) || ckl__get_u32(p + 12) != 0)
    return *why = "unknown flags", CKL_ECORRUPT;
  v->flags = flags;
  v->pid = (int64_t)ckl__get_u64(p + 16);
  v->tid = (int64_t)ckl__get_u64(p + 24);
  v->pid_start = ckl__get_u64(p + 32);
  v->pidns = ckl__get_u64(p + 40);
  v->start_ns = (int64_t)ckl__get_u64(p + 48);
  v->lease_expiry_ns = (int64_t)ckl__get_u64(p + 56);
  if (v->pid <= 0 || v->pid > INT32_MAX || v->tid < 0 || v->tid > INT32_MAX)
    return *why = "pid or tid out of range", CKL_ECORRUPT;
  if (v->start_ns < 0 || v->lease_expiry_ns < 0)
    return *why = "negative time", CKL_ECORRUPT;
  size_t off = REC_HDR;
  for (int i = 0; i < S_N; i++) {
    if (len - off < 2) return *why = "truncated string length", CKL_ECORRUPT;
    size_t n = ckl__get_u16(p + off);
    off += 2;
    if (n > str_max[i] || n < str_min[i]) return *why = "string length out of range", CKL_ECORRUPT;
    if (len - off < n) return *why = "truncated string", CKL_ECORRUPT;
    if (!str_ok(i, p + off, n)) return *why = "control character in a string", CKL_ECORRUPT;
    v->str[i] = (const char *)p + off;
    v->len[i] = n;
    off += n;
  }
  if (off != len) return *why = "trailing bytes", CKL_ECORRUPT;
  return 0;
}

int ckl__roster_encode(const ckl__roster_view *v, void *buf, size_t cap) {
  unsigned char *p = buf;
  if (!v || !p || (v->flags & ~REC_FLAGS_KNOWN) || v->pid <= 0 || v->pid > INT32_MAX ||
      v->tid < 0 || v->tid > INT32_MAX || v->start_ns < 0 || v->lease_expiry_ns < 0)
    return -EINVAL;
  size_t total = REC_HDR;
  for (int i = 0; i < S_N; i++) {
    if (v->len[i] > str_max[i]) return -ENAMETOOLONG;
    if (v->len[i] < str_min[i] || (v->len[i] && !v->str[i])) return -EINVAL;
    if (!str_ok(i, (const unsigned char *)v->str[i], v->len[i])) return -EINVAL;
    total += 2 + v->len[i];
  }
  if (total > cap) return -ENAMETOOLONG;
  ckl__put_u32(p, REC_MAGIC);
  ckl__put_u16(p + 4, REC_VERSION);
  ckl__put_u16(p + 6, REC_HDR);
  ckl__put_u32(p + 8, v->flags);
  ckl__put_u32(p + 12, 0);
  ckl__put_u64(p + 16, (uint64_t)v->pid);
  ckl__put_u64(p + 24, (uint64_t)v->tid);
  ckl__put_u64(p + 32, v->pid_start);
  ckl__put_u64(p + 40, v->pidns);
  ckl__put_u64(p + 48, (uint64_t)v->start_ns);
  ckl__put_u64(p + 56, (uint64_t)v->lease_expiry_ns);
  size_t off = REC_HDR;
  for (int i = 0; i < S_N; i++) {
    ckl__put_u16(p + off, (uint16_t)v->len[i]);
    off += 2;
    if (v->len[i]) memcpy(p + off, v->str[i], v->len[i]);
    off += v->len[i];
  }
  return (int)total;
}

/* ---- staleness ------------------------------------------------------------ */

static int view_eq(const ckl__roster_view *v, int i, const char *s) {
  size_t n = strlen(s);
  return v->len[i] == n && memcmp(v->str[i], s, n) == 0;
}

static int view_local(const ckl__roster_view *v) {
  const ckl__host_ident *me = ckl__host_identity();
  return view_eq(v, S_HOST, me->host_id) && view_eq(v, S_BOOT, me->boot_id) &&
         v->pidns == me->pidns;
}

/* 1 if the (decoded) record is stale as of now_ns. */
static int view_stale(const ckl__roster_view *v, int64_t now_ns) {
  if (view_local(v)) {
    if (v->pid == (int64_t)ckl__getpid()) {
      uint64_t mine;
      if (ckl__self_start_time(&mine) < 0 || v->pid_start == 0) return 0;
      return v->pid_start != mine; /* an earlier process that had our pid */
    }
    return ckl__pid_liveness(v->pid, v->pid_start) == CKL__PID_DEAD;
  }
  return v->lease_expiry_ns != 0 && v->lease_expiry_ns < now_ns;
}

static int64_t now_or(int64_t now_ns) { return now_ns ? now_ns : ckl__now_realtime_ns(); }

/* ---- register / deregister / refresh -------------------------------------- */

struct reg_ctx {
  ckl__roster_view v;
  char *token;
};

static int register_txn(ckl__txn *t, void *arg) {
  struct reg_ctx *c = arg;
  unsigned char buf[CKL__ROSTER_REC_MAX];
  int len = ckl__roster_encode(&c->v, buf, sizeof buf);
  if (len < 0) return len;
  for (int tries = 0;; tries++) {
    int rc = ckl__random_token(c->token);
    if (rc < 0) return rc;
    MDB_val k = {CKL_TOKEN_HEX_LEN, c->token}, val = {(size_t)len, buf};
    rc = mdb_put(t->txn, t->e->dbi_roster, &k, &val, MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST && tries < 4) continue; /* 128 random bits: never, in practice */
    if (rc) return ckl__mdb_err(t, rc, "registering in the roster");
    break;
  }
  return CKL_FAILPOINT("state.roster.before_register_commit");
}

static int reg_fill(const ckl__roster_reg *reg, const ckl__roster_ident *id, ckl__roster_view *v) {
  if (!reg || !reg->operation || !id || !id->host_id || !id->boot_id || !id->hostname)
    return -EINVAL;
  if (reg->flags & ~REC_FLAGS_KNOWN) return -EINVAL;
  memset(v, 0, sizeof *v);
  v->flags = reg->flags;
  if (!strcmp(reg->operation, "backup")) v->flags |= CKL_ROSTER_WRITER;
  v->pid = id->pid;
  v->tid = id->tid;
  v->pid_start = id->pid_start;
  v->pidns = id->pidns;
  v->start_ns = id->start_ns ? id->start_ns : ckl__now_realtime_ns();
  v->lease_expiry_ns = reg->lease_expiry_ns;
  const char *s[S_N] = {id->host_id, id->boot_id, id->hostname, reg->operation,
                        reg->target ? reg->target : ""};
  for (int i = 0; i < S_N; i++) {
    v->str[i] = s[i];
    v->len[i] = strlen(s[i]);
  }
  return 0;
}

int ckl__state_register_as(ckl__state *st, const ckl__roster_reg *reg,
                           const ckl__roster_ident *id, char token_out[CKL_TOKEN_HEX_LEN + 1]) {
  if (!token_out) return -EINVAL;
  struct reg_ctx c = {.token = token_out};
  int rc = reg_fill(reg, id, &c.v);
  if (rc < 0) return rc;
  unsigned char probe[CKL__ROSTER_REC_MAX];
  rc = ckl__roster_encode(&c.v, probe, sizeof probe); /* argument errors before any I/O */
  if (rc < 0) return rc;
  rc = ckl__state_run(st, 1, register_txn, &c);
  if (rc < 0) return rc;
  ckl__observe_record(token_out, 1); /* a runtime task leases it from now on */
  return CKL_FAILPOINT("state.roster.after_register");
}

int ckl__state_register(ckl__state *st, const ckl__roster_reg *reg,
                        char token_out[CKL_TOKEN_HEX_LEN + 1]) {
  const ckl__host_ident *me = ckl__host_identity();
  ckl__roster_ident id = {.host_id = me->host_id, .boot_id = me->boot_id,
                          .hostname = me->hostname, .pidns = me->pidns,
                          .pid = (int64_t)ckl__getpid(), .tid = ckl__gettid()};
  ckl__self_start_time(&id.pid_start); /* 0 if /proc is unreadable: still registers */
  return ckl__state_register_as(st, reg, &id, token_out);
}

static int deregister_txn(ckl__txn *t, void *arg) {
  int rc = CKL_FAILPOINT("state.roster.before_deregister");
  if (rc < 0) return rc;
  MDB_val k = {CKL_TOKEN_HEX_LEN, (void *)arg};
  return ckl__mdb_err(t, mdb_del(t->txn, t->e->dbi_roster, &k, NULL), "deregistering");
}

int ckl__state_deregister(ckl__state *st, const char *token) {
  if (!token || !ckl__token_valid(token, strlen(token))) return -EINVAL;
  /* Before the delete: a lease refreshing it afterwards would call it lost. */
  ckl__observe_record(token, 0);
  return ckl__state_run(st, 1, deregister_txn, (void *)token);
}

struct refresh_ctx {
  const char *token;
  int64_t expiry;
};

static int refresh_txn(ckl__txn *t, void *arg) {
  struct refresh_ctx *c = arg;
  MDB_val k = {CKL_TOKEN_HEX_LEN, (void *)c->token}, val;
  int rc = mdb_get(t->txn, t->e->dbi_roster, &k, &val);
  if (rc) return ckl__mdb_err(t, rc, "reading a roster record");
  ckl__roster_view v;
  const char *why;
  if (ckl__roster_decode(val.mv_data, val.mv_size, &v, &why) < 0) {
    ckl__log_error("coordination state %s: roster record %s does not decode (%s)",
                   t->e->data_path, c->token, why);
    return CKL_ECORRUPT;
  }
  v.lease_expiry_ns = c->expiry;
  unsigned char buf[CKL__ROSTER_REC_MAX];
  int len = ckl__roster_encode(&v, buf, sizeof buf);
  if (len < 0) return len;
  rc = CKL_FAILPOINT("state.roster.before_refresh_commit");
  if (rc < 0) return rc;
  val = (MDB_val){(size_t)len, buf};
  return ckl__mdb_err(t, mdb_put(t->txn, t->e->dbi_roster, &k, &val, 0), "refreshing a lease");
}

int ckl__state_refresh(ckl__state *st, const char *token, int64_t new_expiry_ns) {
  if (!token || !ckl__token_valid(token, strlen(token)) || new_expiry_ns < 0) return -EINVAL;
  struct refresh_ctx c = {token, new_expiry_ns};
  return ckl__state_run(st, 1, refresh_txn, &c);
}

/* ---- reaping ---------------------------------------------------------------- */

int ckl__roster_reap_txn(ckl__txn *t, int64_t now_ns, int *reaped, int64_t *oldest,
                         int *writers, int *unparseable) {
  MDB_cursor *c;
  int rc = mdb_cursor_open(t->txn, t->e->dbi_roster, &c);
  if (rc) return ckl__mdb_err(t, rc, "opening a roster cursor");
  int64_t old = INT64_MAX;
  int nreaped = 0, nwriters = 0, nbad = 0, err = 0;
  MDB_val k, v;
  while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0) {
    ckl__roster_view rv;
    if (ckl__roster_decode(v.mv_data, v.mv_size, &rv, NULL) < 0) {
      /* Held, and possibly a writer from any time: the GC's cutoff must
       * not move past it. */
      nbad++;
      nwriters++;
      old = 0;
      continue;
    }
    if (view_stale(&rv, now_ns)) {
      if ((err = CKL_FAILPOINT("state.roster.before_reap_delete")) < 0) break;
      /* After a delete LMDB leaves the cursor on the next record, and the
       * MDB_NEXT that follows knows not to step over it. */
      if ((rc = mdb_cursor_del(c, 0))) break;
      nreaped++;
      continue;
    }
    if (rv.flags & CKL_ROSTER_WRITER) {
      nwriters++;
      if (rv.start_ns < old) old = rv.start_ns;
    }
  }
  mdb_cursor_close(c);
  if (err < 0) return err;
  if (rc != MDB_NOTFOUND) return ckl__mdb_err(t, rc, "reaping the roster");
  if (reaped) *reaped += nreaped;
  if (oldest) *oldest = old;
  if (writers) *writers = nwriters;
  if (unparseable) *unparseable = nbad;
  return nreaped;
}

struct reap_ctx {
  int64_t now;
  int reaped;
  int64_t oldest;
};

static int reap_txn(ckl__txn *t, void *arg) {
  struct reap_ctx *c = arg;
  c->reaped = 0;
  int rc = ckl__roster_reap_txn(t, c->now, &c->reaped, &c->oldest, NULL, NULL);
  if (rc > 0) ckl__log_info("coordination state %s: reaped %d stale roster record(s)",
                            t->e->data_path, rc);
  return rc;
}

int ckl__state_reap(ckl__state *st, int64_t now_ns) {
  struct reap_ctx c = {.now = now_or(now_ns)};
  int rc = ckl__state_run(st, 1, reap_txn, &c);
  return rc < 0 ? rc : c.reaped;
}

int ckl__state_oldest_writer(ckl__state *st, int64_t now_ns, int64_t *start_ns) {
  if (!start_ns) return -EINVAL;
  struct reap_ctx c = {.now = now_or(now_ns)};
  int rc = ckl__state_run(st, 1, reap_txn, &c);
  if (rc < 0) return rc;
  *start_ns = c.oldest;
  return 0;
}

/* ---- listing --------------------------------------------------------------- */

/* Copy one record into list storage. Decoded strings go into one buffer
 * owned by the list; an unparseable record gets empty strings and a note. */
static int list_push(ckl__roster_list *l, const MDB_val *k, const MDB_val *v, int64_t now_ns,
                     size_t *cap, int *stale) {
  *stale = 0;
  ckl__roster_view rv;
  const char *why = "";
  int rc = ckl__roster_decode(v->mv_data, v->mv_size, &rv, &why);
  int key_ok = ckl__token_valid(k->mv_data, k->mv_size);
  if (rc == 0 && key_ok && view_stale(&rv, now_ns)) {
    *stale = 1;
    return 0;
  }
  if (l->n == *cap) {
    size_t ncap = *cap ? *cap * 2 : 16;
    ckl_roster_entry *nv = realloc(l->v, ncap * sizeof *nv);
    if (!nv) return -ENOMEM;
    l->v = nv;
    char **nb = realloc(l->bufs, ncap * sizeof *nb);
    if (!nb) return -ENOMEM;
    l->bufs = nb;
    *cap = ncap;
  }
  ckl_roster_entry *e = &l->v[l->n];
  memset(e, 0, sizeof *e);
  l->bufs[l->n] = NULL;
  /* The key is shown as is when it is a token, else its printable bytes. */
  size_t kn = k->mv_size < CKL_TOKEN_HEX_LEN ? k->mv_size : CKL_TOKEN_HEX_LEN;
  for (size_t i = 0; i < kn; i++) {
    unsigned char ch = ((const unsigned char *)k->mv_data)[i];
    e->token[i] = ch > 0x20 && ch < 0x7f ? (char)ch : '?';
  }
  e->token[kn] = '\0';
  e->operation = e->target = e->host_id = e->boot_id = e->hostname = "";
  e->note = "";
  if (rc < 0 || !key_ok) {
    /* Listed, never reaped: unreadable holder metadata counts as held. */
    char *note = NULL;
    if (asprintf(&note, "unparseable record: %s",
                 !key_ok ? "key is not a holder token" : why) < 0)
      return -ENOMEM;
    l->bufs[l->n] = note;
    e->parsed = 0;
    e->note = note;
    l->n++;
    return 0;
  }
  size_t total = 0;
  for (int i = 0; i < S_N; i++) total += rv.len[i] + 1;
  char *buf = malloc(total), *p = buf;
  if (!buf) return -ENOMEM;
  const char **dst[S_N] = {&e->host_id, &e->boot_id, &e->hostname, &e->operation, &e->target};
  for (int i = 0; i < S_N; i++) {
    memcpy(p, rv.str[i], rv.len[i]);
    p[rv.len[i]] = '\0';
    *dst[i] = p;
    p += rv.len[i] + 1;
  }
  l->bufs[l->n] = buf;
  e->parsed = 1;
  e->pidns = rv.pidns;
  e->pid = rv.pid;
  e->tid = rv.tid;
  e->pid_start = rv.pid_start;
  e->flags = rv.flags;
  e->start_ns = rv.start_ns;
  e->lease_expiry_ns = rv.lease_expiry_ns;
  e->local = view_local(&rv);
  l->n++;
  return 0;
}

struct list_ctx {
  int64_t now;
  ckl__roster_list *out;
  size_t cap;
  int stale;
};

static int list_txn(ckl__txn *t, void *arg) {
  struct list_ctx *c = arg;
  ckl__roster_list_free(c->out);
  c->cap = 0;
  c->stale = 0;
  MDB_cursor *cur;
  int rc = mdb_cursor_open(t->txn, t->e->dbi_roster, &cur);
  if (rc) return ckl__mdb_err(t, rc, "opening a roster cursor");
  MDB_val k, v;
  int err = 0;
  while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
    int stale;
    if ((err = list_push(c->out, &k, &v, c->now, &c->cap, &stale)) < 0) break;
    c->stale += stale;
  }
  mdb_cursor_close(cur);
  if (err < 0) return err;
  return rc == MDB_NOTFOUND ? 0 : ckl__mdb_err(t, rc, "listing the roster");
}

void ckl__roster_list_free(ckl__roster_list *l) {
  if (!l) return;
  for (size_t i = 0; i < l->n; i++) free(l->bufs[i]);
  free(l->bufs);
  free(l->v);
  memset(l, 0, sizeof *l);
}

int ckl__state_list(ckl__state *st, int64_t now_ns, ckl__roster_list *out, int *reaped) {
  if (!out) return -EINVAL;
  memset(out, 0, sizeof *out);
  if (reaped) *reaped = 0;
  struct list_ctx c = {.now = now_or(now_ns), .out = out};
  int rc = ckl__state_run(st, 0, list_txn, &c);
  if (rc < 0) {
    ckl__roster_list_free(out);
    return rc;
  }
  /* Reap on sight, in a separate write transaction that judges each
   * record again: the read above only tells us there is work. */
  if (c.stale > 0) {
    int n = ckl__state_reap(st, c.now);
    if (n < 0) {
      ckl__roster_list_free(out);
      return n;
    }
    if (reaped) *reaped = n;
  }
  return 0;
}

/* ---- holder lookup ----------------------------------------------------------- */

struct holder_ctx {
  const char *target;
  size_t tlen;
  int64_t now;
  ckl_holder *out;
  int found_excl;
};

static void holder_fill(ckl_holder *h, const MDB_val *k, const ckl__roster_view *v) {
  memset(h, 0, sizeof *h);
  h->known = 1;
  memcpy(h->token, k->mv_data, CKL_TOKEN_HEX_LEN);
  size_t n = v->len[S_OP] < sizeof h->operation - 1 ? v->len[S_OP] : sizeof h->operation - 1;
  memcpy(h->operation, v->str[S_OP], n);
  n = v->len[S_HOSTNAME] < sizeof h->host - 1 ? v->len[S_HOSTNAME] : sizeof h->host - 1;
  memcpy(h->host, v->str[S_HOSTNAME], n);
  n = v->len[S_TARGET] < sizeof h->target - 1 ? v->len[S_TARGET] : sizeof h->target - 1;
  memcpy(h->target, v->str[S_TARGET], n);
  h->pid = v->pid;
  h->tid = v->tid;
  h->since_ns = v->start_ns;
  h->lease_expiry_ns = v->lease_expiry_ns;
}

static int holder_txn(ckl__txn *t, void *arg) {
  struct holder_ctx *c = arg;
  c->out->known = 0;
  c->found_excl = 0;
  MDB_cursor *cur;
  int rc = mdb_cursor_open(t->txn, t->e->dbi_roster, &cur);
  if (rc) return ckl__mdb_err(t, rc, "opening a roster cursor");
  MDB_val k, v;
  while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
    ckl__roster_view rv;
    if (!ckl__token_valid(k.mv_data, k.mv_size) ||
        ckl__roster_decode(v.mv_data, v.mv_size, &rv, NULL) < 0)
      continue; /* cannot name its target; the lock is still reported busy */
    if (c->target ? rv.len[S_TARGET] != c->tlen || memcmp(rv.str[S_TARGET], c->target, c->tlen)
                  : !(rv.flags & CKL_ROSTER_WRITER))
      continue; /* no target: any writer */
    /* No target = the process locker: one kernel owner per process, so a
     * writer of the asking process shares its lock and is not in the way. */
    if (!c->target && rv.pid == (int64_t)ckl__getpid() && view_local(&rv)) continue;
    if (view_stale(&rv, c->now)) continue;
    int excl = (rv.flags & CKL_ROSTER_EXCLUSIVE) != 0;
    /* Best: an exclusive holder (it is the one in the way), then the
     * oldest (it has been in the way longest). */
    if (!c->out->known || (excl && !c->found_excl) ||
        (excl == c->found_excl && rv.start_ns < c->out->since_ns)) {
      holder_fill(c->out, &k, &rv);
      c->found_excl = excl;
    }
  }
  mdb_cursor_close(cur);
  return rc == MDB_NOTFOUND ? 0 : ckl__mdb_err(t, rc, "reading the roster");
}

int ckl__state_holder_for_target(ckl__state *st, const char *target, ckl_holder *out) {
  if (!target || !out) return -EINVAL;
  struct holder_ctx c = {target, strlen(target), ckl__now_realtime_ns(), out, 0};
  int rc = ckl__state_run(st, 0, holder_txn, &c);
  if (rc < 0) {
    out->known = 0;
    return rc;
  }
  return out->known ? 0 : -ENOENT;
}

int ckl__state_holder_writer(ckl__state *st, ckl_holder *out) {
  if (!out) return -EINVAL;
  struct holder_ctx c = {NULL, 0, ckl__now_realtime_ns(), out, 0};
  int rc = ckl__state_run(st, 0, holder_txn, &c);
  if (rc < 0) {
    out->known = 0;
    return rc;
  }
  return out->known ? 0 : -ENOENT;
}

/* ---- live writers -------------------------------------------------------------- */

struct writers_ctx {
  int64_t now;
  int n;
};

static int writers_txn(ckl__txn *t, void *arg) {
  struct writers_ctx *c = arg;
  c->n = 0;
  MDB_cursor *cur;
  int rc = mdb_cursor_open(t->txn, t->e->dbi_roster, &cur);
  if (rc) return ckl__mdb_err(t, rc, "opening a roster cursor");
  MDB_val k, v;
  while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
    ckl__roster_view rv;
    /* An unparseable record may be a writer: counted, like
     * ckl__state_oldest_writer counts it (never the cheaper guess). */
    if (!ckl__token_valid(k.mv_data, k.mv_size) ||
        ckl__roster_decode(v.mv_data, v.mv_size, &rv, NULL) < 0) {
      c->n++;
      continue;
    }
    if ((rv.flags & CKL_ROSTER_WRITER) && !view_stale(&rv, c->now)) c->n++;
  }
  mdb_cursor_close(cur);
  return rc == MDB_NOTFOUND ? 0 : ckl__mdb_err(t, rc, "reading the roster");
}

int ckl__state_writers_live(ckl__state *st, int64_t now_ns, int *n) {
  if (!n) return -EINVAL;
  struct writers_ctx c = {.now = now_or(now_ns)};
  int rc = ckl__state_run(st, 0, writers_txn, &c);
  if (rc < 0) return rc;
  *n = c.n;
  return 0;
}

/* ---- admin removal ------------------------------------------------------------ */

static int remove_txn(ckl__txn *t, void *arg) {
  MDB_val k = {CKL_TOKEN_HEX_LEN, arg}, v;
  int rc = mdb_get(t->txn, t->e->dbi_roster, &k, &v);
  if (rc) return ckl__mdb_err(t, rc, "reading a roster record");
  ckl__roster_view rv;
  if (ckl__roster_decode(v.mv_data, v.mv_size, &rv, NULL) == 0 && view_local(&rv) &&
      !view_stale(&rv, ckl__now_realtime_ns()))
    return CKL_EBUSY;
  return ckl__mdb_err(t, mdb_del(t->txn, t->e->dbi_roster, &k, NULL), "removing a record");
}

int ckl__state_remove(ckl__state *st, const char *token) {
  if (!token || !ckl__token_valid(token, strlen(token))) return -EINVAL;
  return ckl__state_run(st, 1, remove_txn, (void *)token);
}

/* ---- public API (chunklock/roster.h) -------------------------------------------- */

static int open_store(const char *store_dir, ckl__state **st) {
  if (!store_dir || !st) return -EINVAL;
  char p[4200];
  struct stat sb;
  if (stat(store_dir, &sb) != 0) return -errno;
  if (!S_ISDIR(sb.st_mode)) return -ENOTDIR;
  if (ckl__pathf(p, sizeof p, "%s/.chunks", store_dir) < 0) return -ENAMETOOLONG;
  if (stat(p, &sb) != 0 || !S_ISDIR(sb.st_mode)) return CKL_ENOTSTORE;
  return ckl__state_open(store_dir, st);
}

int ckl_roster_list(const char *store_dir, ckl_roster_cb cb, void *arg) {
  ckl__state *st;
  int rc = open_store(store_dir, &st);
  if (rc < 0) return rc;
  ckl__roster_list l;
  rc = ckl__state_list(st, 0, &l, NULL);
  ckl__state_close(st);
  if (rc < 0) return rc;
  rc = (int)l.n;
  for (size_t i = 0; cb && i < l.n; i++) {
    int r = cb(&l.v[i], arg);
    if (r != 0) {
      rc = r;
      break;
    }
  }
  ckl__roster_list_free(&l);
  return rc;
}

int ckl_roster_reap(const char *store_dir, int64_t now_ns) {
  ckl__state *st;
  int rc = open_store(store_dir, &st);
  if (rc < 0) return rc;
  rc = ckl__state_reap(st, now_ns);
  ckl__state_close(st);
  return rc;
}

int ckl_roster_remove(const char *store_dir, const char *token) {
  if (!token || !ckl__token_valid(token, strlen(token))) return -EINVAL;
  ckl__state *st;
  int rc = open_store(store_dir, &st);
  if (rc < 0) return rc;
  rc = ckl__state_remove(st, token);
  ckl__state_close(st);
  return rc;
}

int ckl_roster_gc_state(const char *store_dir, ckl_roster_gc *out) {
  if (!out) return -EINVAL;
  memset(out, 0, sizeof *out);
  ckl__state *st;
  int rc = open_store(store_dir, &st);
  if (rc < 0) return rc;
  ckl__gc_info gi;
  rc = ckl__state_gc_info(st, &gi);
  ckl__state_close(st);
  if (rc < 0) return rc;
  out->active = gi.active;
  memcpy(out->token, gi.token, sizeof out->token);
  out->phase1_start_ns = gi.phase1_start_ns;
  out->removed = gi.removed;
  return 0;
}

/*
 * datastore/state_int.h - shared by state.c, state_gc.c and roster.c only:
 * the environment object, the transaction runner and LMDB error mapping.
 */
#ifndef CKL_DATASTORE_STATE_INT_H
#define CKL_DATASTORE_STATE_INT_H

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "common/internal.h"
#include "datastore/state.h"

/* One open LMDB environment: a registry entry, shared by every handle of
 * the process that opened the same .state directory. */
typedef struct ckl__env {
  struct ckl__env *next; /* registry list (reg_mu) */
  int linked;            /* on the registry list (reg_mu) */
  int refs;              /* handles + calls in flight (reg_mu) */
  dev_t dev;             /* the .state directory: the registry key */
  ino_t ino;
  dev_t data_dev;        /* data.mdb as mapped: a call that finds another */
  ino_t data_ino;        /*   file at the path knows the env was replaced */
  char *dir;             /* STORE/.state */
  char *data_path;       /* STORE/.state/data.mdb */
  MDB_env *env;
  MDB_dbi dbi_meta, dbi_roster, dbi_gc, dbi_removed;
  /* Read-held by every transaction of this process, write-held to change
   * the map size: LMDB allows mdb_env_set_mapsize only while the process
   * has no transaction open. */
  pthread_rwlock_t rw;
  size_t mapsize; /* under rw (write) */
  size_t map_max;
  atomic_int dead; /* replaced or found damaged: handles move to a new env */
} ckl__env;

struct ckl__state {
  pthread_mutex_t mu; /* guards env swaps */
  ckl__env *env;      /* holds one ref */
  char *store_dir;
  ckl__state_opts opts;
  uint64_t fork_gen;  /* fork generation at open: calls in a child refuse */
};

/* What a transaction body sees. */
typedef struct ckl__txn {
  MDB_txn *txn;
  ckl__env *e;
  int write;
  /* Set by a body once it has done something outside LMDB (the forget's
   * rename): from then on the runner must not replay it after growing the
   * map, it reports the failure instead. */
  int no_retry;
} ckl__txn;

typedef int (*ckl__txn_fn)(ckl__txn *t, void *arg);

/* Internal sentinel a body returns (via ckl__mdb_err) when LMDB says the
 * map is full: the runner grows the map and replays the body. Equal to
 * MDB_MAP_FULL, outside both the errno range and the CKL_E* block. */
#define CKL__STATE_MAP_FULL MDB_MAP_FULL

/* Run fn in one transaction (write: commit if fn returns >= 0, else abort;
 * read: always end). Handles map growth, another process's map growth,
 * replaced and damaged environments. Returns fn's result or an error. */
int ckl__state_run(ckl__state *st, int write, ckl__txn_fn fn, void *arg);

/* Map an LMDB return code to ours, logging what failed and where:
 * MDB_NOTFOUND -> -ENOENT (not logged), MDB_MAP_FULL -> the sentinel,
 * damage -> CKL_ECORRUPT (and the env is marked for recovery), positive
 * errno -> -errno. */
int ckl__mdb_err(ckl__txn *t, int rc, const char *what);

/* Is rc an LMDB code that means the file is damaged? */
int ckl__mdb_is_damage(int rc);

/* Token syntax: exactly 32 lowercase hex characters. */
int ckl__token_valid(const char *s, size_t len);

/* Little-endian helpers for the fixed encodings. */
static inline void ckl__put_u16(unsigned char *p, uint16_t v) {
  p[0] = (unsigned char)v;
  p[1] = (unsigned char)(v >> 8);
}
static inline void ckl__put_u32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline void ckl__put_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline uint16_t ckl__get_u16(const unsigned char *p) {
  return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t ckl__get_u32(const unsigned char *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
static inline uint64_t ckl__get_u64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* Reap stale roster records inside a write transaction (roster.c; used by
 * gc_begin). Counts into *reaped; the oldest writer start of the records
 * that remain goes to *oldest (INT64_MAX if none), with writer and
 * unparseable counts. */
int ckl__roster_reap_txn(ckl__txn *t, int64_t now_ns, int *reaped, int64_t *oldest,
                         int *writers, int *unparseable);

#endif

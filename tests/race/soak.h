/*
 * tests/race/soak.h - the randomized soak (docs/hacking.md "Soak").
 *
 * One store, P worker processes x T threads, each thread running a random
 * mix of every operation for a fixed time while random `sleep(N)`
 * failpoints (and with --crash, `crash`) perturb the interleavings. The
 * parent process is the coordinator: it spawns (and in crash mode
 * respawns) the workers, quiesces them through a barrier in shared
 * memory every few seconds to run the invariant checks, and reports.
 *
 * Everything the processes share lives in one MAP_SHARED mapping
 * (soak_shm) made before the first fork:
 *   - the snapshot table: what every snapshot the soak created must
 *     contain (its "recipe") and how many manifest updates succeeded on
 *     it; it is what the checks compare the store with;
 *   - counters (ops by type and result), the "currently at step" table
 *     and the interleaving bitmap;
 *   - the barrier and the first failure's text.
 * The table is guarded by a robust process-shared mutex: a worker process
 * may die (crash mode) while one of its threads holds it.
 */
#ifndef CKL_SOAK_H
#define CKL_SOAK_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "chunklock/chunklock.h"

#define SOAK_MAX_PROCS 16
#define SOAK_MAX_THREADS 16
#define SOAK_MAX_WORKERS (SOAK_MAX_PROCS * SOAK_MAX_THREADS)
#define SOAK_GROUPS 6
#define SOAK_MAX_SNAPS 1024
#define SOAK_CHUNKS 12     /* chunks per archive, at most */
#define SOAK_ARCHIVES 2    /* archives per snapshot, at most */
#define SOAK_FIXED 4096    /* chunk size of the fixed (fidx) archives */
#define SOAK_COMMON 48     /* seeds 1..SOAK_COMMON: chunks every group shares */
#define SOAK_FP_MAX 192    /* failpoints in the catalog, at most */
#define SOAK_T0 INT64_C(1700000000)
#define SOAK_TIME_STEP 1800 /* snapshot times of a group are 30 min apart */
#define SOAK_COUNTER_KEY "soak_counter" /* in the manifest's "unprotected" */

typedef enum soak_op {
  OP_BACKUP,
  OP_READ,
  OP_VERIFY,
  OP_UPDATE,
  OP_FORGET,
  OP_PRUNE,
  OP_GC,
  OP_GC_STRICT,
  OP_FREEZE,
  OP_FREEZE_EXCL,
  OP_N
} soak_op;

typedef enum soak_res {
  RES_OK,
  RES_BUSY,
  RES_TIMEDOUT,
  RES_ENOENT,
  RES_ABORTED, /* a backup the soak chose to abort; a GC aborted by a crashed forget */
  RES_DRYRUN,  /* a dry-run prune or GC */
  RES_N
} soak_res;

extern const char *const soak_op_names[OP_N];
extern const char *const soak_res_names[RES_N];

/* One archive of a snapshot: chunk i is made from seed[i] (soak_chunk). */
typedef struct soak_arch {
  uint8_t fixed; /* 1: "aN.fidx" with SOAK_FIXED chunks; 0: "aN.didx" */
  uint8_t n;
  uint32_t seed[SOAK_CHUNKS];
} soak_arch;

typedef struct soak_recipe {
  uint8_t narch;
  soak_arch arch[SOAK_ARCHIVES];
} soak_recipe;

typedef enum soak_snap_state { S_FREE = 0, S_WRITING, S_COMPLETE } soak_snap_state;

/* A snapshot the soak created. `gen` changes whenever the slot is reused,
 * so a worker that copied (slot, gen) never credits a result to the next
 * snapshot in the slot. */
typedef struct soak_snap {
  uint32_t gen;
  uint8_t state; /* soak_snap_state */
  uint8_t group;
  pid_t writer_pid; /* S_WRITING: the backup's process */
  /* forgets of it running, per worker process (counts, not a pid: two
   * processes may try at once, and the loser must not erase the winner) */
  uint8_t forgetting[SOAK_MAX_PROCS];
  int64_t time_s;
  soak_recipe r;
  int64_t ctr_ok;      /* manifest increments that returned 0 */
  int64_t ctr_pending; /* increments in flight (or lost in a crash) */
} soak_snap;

typedef struct soak_group {
  atomic_int_fast64_t next_time; /* times handed out: SOAK_T0 + k * step */
  uint8_t pruning[SOAK_MAX_PROCS]; /* prunes of it running, per process */
} soak_group;

typedef struct soak_shm {
  /* configuration, set before the first fork */
  uint64_t seed;
  int procs, threads, crash, verbose;
  int64_t seconds;
  char store[PATH_MAX];

  pthread_mutex_t mu; /* robust, process-shared: the snapshot table */
  soak_group groups[SOAK_GROUPS];
  soak_snap snaps[SOAK_MAX_SNAPS];

  atomic_int stop;
  /* barrier: odd while the coordinator wants everybody parked; a worker
   * parks by writing the odd value it saw into parked[] and does not leave
   * until pause_gen changes (so a stale parked[] never counts) */
  atomic_int pause_gen;
  atomic_int parked[SOAK_MAX_WORKERS];

  /* "currently at step": the op each worker runs (-1 idle) and the last
   * failpoint (catalog index) it passed in that op (-1 none yet) */
  atomic_int cur_op[SOAK_MAX_WORKERS];
  atomic_int cur_fp[SOAK_MAX_WORKERS];
  /* (op A at failpoint X, op B started) triples seen, and (A, X) steps */
  atomic_uchar inter[OP_N][SOAK_FP_MAX][OP_N];
  atomic_uchar steps[OP_N][SOAK_FP_MAX];

  atomic_uint_fast64_t counts[OP_N][RES_N];
  atomic_uint_fast64_t chunks_new, chunks_dedup, chunks_reused, bytes_read;
  atomic_uint_fast64_t gc_removed_chunks, gc_removed_set, freeze_checks;
  atomic_uint_fast64_t fp_sleeps_armed, crashes_armed;
  atomic_uint_fast64_t checks_run, crashes, respawns;
  atomic_uint_fast64_t busy_no_holder; /* only counted with --strict-holder */
  atomic_uint_fast64_t next_seed;      /* fresh chunk seeds */
  atomic_int strict_holder;

  atomic_int failed;
  char failure[16384];
} soak_shm;

extern soak_shm *soak;

/* ---- soak_shm.c --------------------------------------------------------- */
int soak_shm_init(void); /* map and initialise `soak` */
void soak_lock(void);
void soak_unlock(void);
/* Record the first failure (later ones are dropped) and stop everybody. */
void soak_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void soak_group_name(int g, ckl_group_name *out);
/* A snapshot's name from its group and time. */
void soak_snap_name(int g, int64_t time_s, ckl_snapshot_name *out);
/* Find the table slot of a snapshot (caller holds the lock), -1 if none. */
int soak_find_locked(const ckl_snapshot_name *n);
/* Group index of a group name, -1 if not one of ours. */
int soak_group_index(const char *type, const char *id);

/* Chunk data: soak_chunk_len bytes made from the seed, for either kind. */
size_t soak_chunk_len(uint32_t seed, int fixed, int last);
void soak_chunk_fill(uint32_t seed, void *buf, size_t len);
/* Archive i's file name ("a0.didx", "a1.fidx") and whole content. */
void soak_arch_name(const soak_arch *a, int i, char *buf, size_t len);
uint64_t soak_arch_size(const soak_arch *a);
unsigned char *soak_arch_bytes(const soak_arch *a, uint64_t *size);

/* The failpoint catalog: index by the name pointer the trace hook gets. */
int soak_fp_index(const char *catalog_name);
size_t soak_fp_count(void);
const char *soak_fp_name(int i);

/* Random numbers: xoshiro-ish per thread state. */
typedef struct soak_rng {
  uint64_t s;
} soak_rng;
uint64_t soak_rand(soak_rng *r);
static inline uint32_t soak_below(soak_rng *r, uint32_t n) {
  return n ? (uint32_t)(soak_rand(r) % n) : 0;
}
uint64_t soak_mix(uint64_t x);

/* ---- soak_ops.c ----------------------------------------------------------- */
typedef struct soak_worker {
  int slot;      /* index in the shared per-worker tables */
  int proc, thread, life; /* life: respawn generation of the process */
  uint64_t seed; /* this thread's seed */
  soak_rng rng;
  ckl_store *st;
} soak_worker;

/* Run ops until stop, parking at the barrier; returns when stopped. */
void soak_worker_run(soak_worker *w);
/* Per process: log capture, failpoint tracing (every catalog point armed
 * with "count"). */
void soak_worker_process_init(void);

/* ---- soak_check.c ------------------------------------------------------- */
/* Quiescent checks: the shared invariant checker plus the soak's own
 * table checks. 0, or -1 after soak_fail. */
int soak_check_quiescent(const char *when);
/* Crash mode: what a user does after a crash (the next GC takes over a
 * dead GC's state). 0 or -1 after soak_fail. */
int soak_recover(void);
/* The end: recovery (crash mode), fsck --clean (crash mode), fsck clean. */
int soak_check_final(void);
/* Crash mode: a worker process died; settle the table entries it was
 * changing from what is on disk. */
void soak_reconcile_dead(pid_t pid, int proc);

#endif

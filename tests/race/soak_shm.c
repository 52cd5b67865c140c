/*
 * tests/race/soak_shm.c - the soak's shared memory, its snapshot table,
 * deterministic chunk data, the failpoint catalog index and random numbers.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "soak.h"

soak_shm *soak;

const char *const soak_op_names[OP_N] = {
    [OP_BACKUP] = "backup", [OP_READ] = "read",     [OP_VERIFY] = "verify",
    [OP_UPDATE] = "update_manifest", [OP_FORGET] = "forget", [OP_PRUNE] = "prune",
    [OP_GC] = "gc",         [OP_GC_STRICT] = "gc_strict", [OP_FREEZE] = "with_lock_shared",
    [OP_FREEZE_EXCL] = "with_lock_exclusive"};

const char *const soak_res_names[RES_N] = {[RES_OK] = "ok",         [RES_BUSY] = "busy",
                                         [RES_TIMEDOUT] = "timedout", [RES_ENOENT] = "enoent",
                                         [RES_ABORTED] = "aborted", [RES_DRYRUN] = "dry_run"};

int soak_shm_init(void) {
  void *p = mmap(NULL, sizeof *soak, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return -errno;
  soak = p; /* anonymous memory is zeroed: every counter starts at 0 */
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  int rc = pthread_mutex_init(&soak->mu, &a);
  pthread_mutexattr_destroy(&a);
  if (rc) return -rc;
  for (int i = 0; i < SOAK_MAX_WORKERS; i++) {
    atomic_store(&soak->cur_op[i], -1);
    atomic_store(&soak->cur_fp[i], -1);
    atomic_store(&soak->parked[i], 0);
  }
  atomic_store(&soak->next_seed, 1000000);
  return 0;
}

/* A worker process can die (crash mode) while another of its threads holds
 * the table: the robust mutex then hands it over. Critical sections write
 * an entry's `state` last, so an interrupted one leaves at worst a
 * half-filled FREE or WRITING entry, which the dead process's
 * reconciliation settles. */
void soak_lock(void) {
  int rc = pthread_mutex_lock(&soak->mu);
  if (rc == EOWNERDEAD) pthread_mutex_consistent(&soak->mu);
  else if (rc) abort();
}

void soak_unlock(void) { pthread_mutex_unlock(&soak->mu); }

void soak_fail(const char *fmt, ...) {
  int expected = 0;
  if (atomic_compare_exchange_strong(&soak->failed, &expected, 1)) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(soak->failure, sizeof soak->failure, fmt, ap);
    va_end(ap);
    atomic_store(&soak->failed, 2); /* text complete */
  }
  atomic_store(&soak->stop, 1);
}

void soak_group_name(int g, ckl_group_name *out) {
  memset(out, 0, sizeof *out);
  snprintf(out->type, sizeof out->type, "%s", g % 2 ? "vm" : "host");
  snprintf(out->id, sizeof out->id, "g%d", g);
}

int soak_group_index(const char *type, const char *id) {
  for (int g = 0; g < SOAK_GROUPS; g++) {
    ckl_group_name n;
    soak_group_name(g, &n);
    if (strcmp(n.type, type) == 0 && strcmp(n.id, id) == 0) return g;
  }
  return -1;
}

void soak_snap_name(int g, int64_t time_s, ckl_snapshot_name *out) {
  ckl_group_name n;
  soak_group_name(g, &n);
  if (ckl_snapshot_name_make(n.type, n.id, time_s, out) != 0) abort();
}

int soak_find_locked(const ckl_snapshot_name *n) {
  int g = soak_group_index(n->type, n->id);
  if (g < 0) return -1;
  for (int i = 0; i < SOAK_MAX_SNAPS; i++) {
    soak_snap *s = &soak->snaps[i];
    if (s->state != S_FREE && s->group == g && s->time_s == n->time_s) return i;
  }
  return -1;
}

/* ---- deterministic data ---------------------------------------------------- */

uint64_t soak_mix(uint64_t x) { /* splitmix64's finaliser */
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t soak_rand(soak_rng *r) {
  r->s += 0x9e3779b97f4a7c15ull;
  return soak_mix(r->s);
}

/* Dynamic chunks are 64..4159 bytes; fixed ones SOAK_FIXED but the last
 * of an archive, which is shorter. The same seed gives different chunks
 * in the two kinds (different lengths), so reuse only pairs like kinds. */
size_t soak_chunk_len(uint32_t seed, int fixed, int last) {
  uint64_t h = soak_mix(seed);
  if (fixed) return last ? 1 + (size_t)(h % SOAK_FIXED) : SOAK_FIXED;
  return 64 + (size_t)(h % 4096);
}

void soak_chunk_fill(uint32_t seed, void *buf, size_t len) {
  uint64_t x = soak_mix((uint64_t)seed << 1 | 1);
  unsigned char *p = buf;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    memcpy(p + i, &x, 8);
  }
  for (; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p[i] = (unsigned char)x;
  }
}

void soak_arch_name(const soak_arch *a, int i, char *buf, size_t len) {
  snprintf(buf, len, "a%d.%s", i, a->fixed ? "fidx" : "didx");
}

uint64_t soak_arch_size(const soak_arch *a) {
  uint64_t n = 0;
  for (int k = 0; k < a->n; k++) n += soak_chunk_len(a->seed[k], a->fixed, k == a->n - 1);
  return n;
}

unsigned char *soak_arch_bytes(const soak_arch *a, uint64_t *size) {
  *size = soak_arch_size(a);
  unsigned char *buf = malloc(*size + 1);
  if (!buf) abort();
  uint64_t off = 0;
  for (int k = 0; k < a->n; k++) {
    size_t len = soak_chunk_len(a->seed[k], a->fixed, k == a->n - 1);
    soak_chunk_fill(a->seed[k], buf + off, len);
    off += len;
  }
  return buf;
}

/* ---- failpoint catalog ---------------------------------------------------- */

int soak_fp_index(const char *catalog_name) {
  size_t n = ckl_failpoint_count();
  if (n > SOAK_FP_MAX) n = SOAK_FP_MAX;
  for (size_t i = 0; i < n; i++)
    if (ckl_failpoint_catalog(i, NULL) == catalog_name) return (int)i;
  return -1;
}

size_t soak_fp_count(void) {
  size_t n = ckl_failpoint_count();
  return n > SOAK_FP_MAX ? SOAK_FP_MAX : n;
}

const char *soak_fp_name(int i) { return ckl_failpoint_catalog((size_t)i, NULL); }

/*
 * common/process.c - per-process state that a fork must change: the cached
 * pid and thread id, the key of the token generator, and the fork
 * generation that lock release uses to know whether its open file
 * description may have been inherited.
 *
 * Why cache at all. getpid() is a real system call since glibc 2.25, and
 * every lock checks it twice per acquire+release pair (fork safety: an
 * inherited lock must be inert in the child). Tokens came from getrandom(),
 * another system call per lock. Together they were a third of an
 * uncontended path lock (docs/benchmarks.md, figure 1).
 *
 * How a cache stays right across fork. The state lives in one anonymous
 * page marked MADV_WIPEONFORK (Linux >= 4.14): the kernel hands every
 * child a zeroed copy, whatever made the child (fork(), _Fork(), a raw
 * clone() without CLONE_VM), and a zeroed state means "not initialised",
 * so the child's first call reads its own pid and draws its own key. A
 * pthread_atfork child handler resets it too, for kernels without
 * MADV_WIPEONFORK (there a child made by a raw clone() would keep the
 * parent's pid, as it would with any pid cache; fork() children are
 * right). A vfork()/posix_spawn() child shares our memory but runs no
 * library code before it execs.
 *
 * Tokens. A token names a holder across processes and hosts (soft lock
 * markers compare them), so it must be unique and, as before, not
 * guessable from the tokens one has seen. Each process draws a 128-bit key
 * from getrandom() once (again in every fork child) and a token is
 * SipHash-2-4(key, counter) for two consecutive values of a process-wide
 * atomic counter: a keyed PRF, so tokens of one process never repeat while
 * the counter does not wrap, two processes' streams are independent, and
 * without the key the next token cannot be told from the last one.
 */
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>

#include "internal.h"

enum { ST_NONE = 0, ST_INIT = 1, ST_READY = 2 };

typedef struct proc_state {
  atomic_int ready;     /* ST_*: 0 after a fork (wiped page or atfork) */
  pid_t pid;            /* written once per process before ST_READY */
  int key_err;          /* 0, or -errno when no random key could be had */
  uint64_t key[2];
  atomic_uint_least64_t counter;
} proc_state;

static proc_state fallback_state; /* if the page cannot be mapped */
static proc_state *ps = &fallback_state; /* set once by ps_setup */
static pthread_once_t ps_once = PTHREAD_ONCE_INIT;
/* 1 once ps_setup has run: saves the pthread_once call (a PLT call on
 * the hottest path of a nested process-locker guard). Release/acquire
 * publishes ps. Survives fork, as the mapping does. */
static atomic_int ps_set;

/* ---- fork generation and the release gate ---------------------------------
 * fork_gen is bumped in the parent by the prepare handler, before the
 * child's copy of the descriptor table is made; fork_pending is 1 from then
 * until the parent handler runs; gate_inflight counts threads inside a
 * ckl__fork_gate_enter/leave section. See ckl__fork_gate_enter. */
static atomic_uint_least64_t fork_gen = 1;
static atomic_int fork_pending;
static atomic_int gate_inflight;

static void at_prepare(void) {
  atomic_store(&fork_pending, 1);
  atomic_fetch_add(&fork_gen, 1);
  /* Wait for releases that decided "not inherited" before this fork
   * became visible: they close their fd before the table is copied. Each
   * is one close() away from leaving. */
  while (atomic_load(&gate_inflight) != 0) sched_yield();
}
static void at_parent(void) { atomic_store(&fork_pending, 0); }
static void at_child(void) {
  atomic_store(&fork_pending, 0);
  atomic_store(&gate_inflight, 0);
  atomic_store(&ps->ready, ST_NONE); /* in case the page was not wiped */
}

static void ps_setup(void) {
  void *p = mmap(NULL, sizeof(proc_state) < 4096 ? 4096 : sizeof(proc_state),
                 PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p != MAP_FAILED) {
    /* EINVAL before Linux 4.14: the atfork handler still covers fork(). */
    (void)madvise(p, 4096, MADV_WIPEONFORK);
    ps = p; /* zeroed by mmap = ST_NONE */
  }
  pthread_atfork(at_prepare, at_parent, at_child);
  atomic_store_explicit(&ps_set, 1, memory_order_release);
}

static int read_urandom(void *buf, size_t len) {
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  unsigned char *p = buf;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = n < 0 ? errno : EIO;
      ckl__close(fd);
      return -err;
    }
    p += n;
    len -= (size_t)n;
  }
  ckl__close(fd);
  return 0;
}

static int fill_random(void *buf, size_t len) {
  unsigned char *p = buf;
  while (len > 0) {
    ssize_t n = getrandom(p, len, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      /* ENOSYS (kernel < 3.17) or a seccomp filter: the device then. */
      return read_urandom(p, len);
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static proc_state *state(void) {
  if (CKL__UNLIKELY(!atomic_load_explicit(&ps_set, memory_order_acquire)))
    pthread_once(&ps_once, ps_setup);
  proc_state *s = ps;
  if (CKL__LIKELY(atomic_load_explicit(&s->ready, memory_order_acquire) == ST_READY)) return s;
  int expect = ST_NONE;
  if (atomic_compare_exchange_strong(&s->ready, &expect, ST_INIT)) {
    /* Only this thread writes the fields until ST_READY publishes them. */
    s->pid = (pid_t)syscall(SYS_getpid);
    s->key_err = fill_random(s->key, sizeof s->key);
    if (s->key_err < 0) {
      /* Tokens refuse to work without a key (they name holders across
       * hosts); jitter and temp names only need distinct streams. */
      s->key[0] = (uint64_t)s->pid * 0x9E3779B97F4A7C15ULL;
      s->key[1] = (uint64_t)ckl__now_monotonic_ns();
    }
    atomic_store_explicit(&s->counter, 0, memory_order_relaxed);
    atomic_store_explicit(&s->ready, ST_READY, memory_order_release);
    return s;
  }
  /* Another thread is initialising: two system calls away from done. */
  while (atomic_load_explicit(&s->ready, memory_order_acquire) != ST_READY) sched_yield();
  return s;
}

pid_t ckl__getpid(void) { return state()->pid; }

int64_t ckl__gettid(void) {
  /* Per thread, tagged with the pid it was read in: the forking thread's
   * copy in a child carries the parent's pid and is read again. */
  static _Thread_local pid_t tid_pid;
  static _Thread_local int64_t tid;
  pid_t me = ckl__getpid();
  if (tid_pid != me) {
    tid = (int64_t)syscall(SYS_gettid);
    tid_pid = me;
  }
  return tid;
}

/* ---- SipHash-2-4 (Aumasson and Bernstein), one 8-byte message ---------- */

static inline uint64_t rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }
#define SIPROUND                                                                           \
  do {                                                                                     \
    v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);                              \
    v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;                                                 \
    v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;                                                 \
    v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);                              \
  } while (0)

static uint64_t siphash_u64(const uint64_t k[2], uint64_t m) {
  uint64_t v0 = k[0] ^ 0x736f6d6570736575ULL, v1 = k[1] ^ 0x646f72616e646f6dULL;
  uint64_t v2 = k[0] ^ 0x6c7967656e657261ULL, v3 = k[1] ^ 0x7465646279746573ULL;
  const uint64_t b = (uint64_t)8 << 56; /* message length 8 in the last block */
  v3 ^= m;
  SIPROUND;
  SIPROUND;
  v0 ^= m;
  v3 ^= b;
  SIPROUND;
  SIPROUND;
  v0 ^= b;
  v2 ^= 0xff;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  return v0 ^ v1 ^ v2 ^ v3;
}
#undef SIPROUND

static uint64_t next_random(proc_state *s) {
  uint64_t n = atomic_fetch_add_explicit(&s->counter, 1, memory_order_relaxed);
  return siphash_u64(s->key, n);
}

int ckl__random_token(char out[CKL_TOKEN_HEX_LEN + 1]) {
  proc_state *s = state();
  if (s->key_err < 0) return s->key_err;
  static const char hex[] = "0123456789abcdef";
  for (int half = 0; half < 2; half++) {
    uint64_t v = next_random(s);
    for (int i = 0; i < 16; i++) out[16 * half + i] = hex[(v >> (60 - 4 * i)) & 15];
  }
  out[CKL_TOKEN_HEX_LEN] = '\0';
  return 0;
}

uint64_t ckl__random_u64(void) { return next_random(state()); }

uint64_t ckl__fork_generation(void) {
  state(); /* registers the atfork handlers before any caller can depend on them */
  /* Read the generation before the pending flag: a generation that already
   * counts a fork in progress comes with pending = 1 (or the fork is over,
   * its table copy made before our caller opens anything). */
  uint64_t g = atomic_load(&fork_gen);
  if (atomic_load(&fork_pending)) return 0; /* never matches: fork_gen starts at 1 */
  return g;
}

bool ckl__fork_gate_enter(uint64_t gen) {
  if (gen == 0) return false;
  /* Dekker with at_prepare: we publish inflight then read pending; it
   * publishes pending then reads inflight (all seq_cst). Either we see the
   * fork coming and take the slow path, or it sees us and waits until our
   * close() is done, so the child's table is copied without our fd. */
  atomic_fetch_add(&gate_inflight, 1);
  if (atomic_load(&fork_pending) || atomic_load(&fork_gen) != gen) {
    atomic_fetch_sub(&gate_inflight, 1);
    return false;
  }
  return true;
}

void ckl__fork_gate_leave(void) { atomic_fetch_sub(&gate_inflight, 1); }

/* common/util.c - clocks, identity, deadlines, small string helpers. */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"

const char *ckl_version(void) { return CKL_VERSION_STRING; }

static int64_t clock_ns(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
int64_t ckl__now_realtime_ns(void) { return clock_ns(CLOCK_REALTIME); }
int64_t ckl__now_monotonic_ns(void) { return clock_ns(CLOCK_MONOTONIC); }
int64_t ckl__now_boottime_ns(void) { return clock_ns(CLOCK_BOOTTIME); }

void ckl__sleep_ms(int64_t ms) {
  if (ms <= 0) return;
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

void ckl__format_time(int64_t realtime_ns, char *buf, size_t len) {
  time_t t = (time_t)(realtime_ns / 1000000000LL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Tokens, random values, pid and tid: common/process.c (they must change
 * at fork). */

static pthread_once_t host_once = PTHREAD_ONCE_INIT;
static char host_name[64];
static void host_init(void) {
  if (gethostname(host_name, sizeof host_name - 1) != 0 || host_name[0] == '\0')
    ckl__strlcpy(host_name, "unknown", sizeof host_name);
  host_name[sizeof host_name - 1] = '\0';
}
const char *ckl__hostname(void) {
  pthread_once(&host_once, host_init);
  return host_name;
}

/*
 * Waiting for a lock with a deadline.
 *
 * The kernel has no timed F_OFD_SETLKW, so a deadline wait polls:
 * F_OFD_SETLK, and while busy, ckl__deadline_backoff between attempts.
 * How it polls decides the handoff latency. A first sleep of 0.5-1 ms made
 * every contended handoff cost ~0.9 ms against the ~20 us in which the
 * kernel wakes a blocked F_OFD_SETLKW (docs/benchmarks.md, figure 2), and
 * most locks (a manifest update, a GC lock handed over) are held for far
 * less than that. So, for kernel locks (ckl__deadline_init):
 *   1. spin: for the first CKL__SPIN_NS after the first busy answer, retry
 *      at once, with sched_yield() between attempts: the holder, if it is
 *      runnable, gets the CPU (this machine class has 2 cores), and a
 *      release is seen within one attempt (a few us). An attempt is a
 *      non-blocking fcntl (plus an open and a stat for path locks);
 *   2. then sleep, starting at CKL__BACKOFF_START_US and doubling to the
 *      cap, a uniformly random 50-100 % of the step (jitter keeps waiters
 *      from retrying in lockstep). A long wait costs one wake-up per cap
 *      interval, as before.
 * Never past the deadline; CKL_TRY never waits.
 *
 * Why not the alternatives that would block in the kernel:
 *   - a signal-timed F_OFD_SETLKW (a per-thread POSIX timer whose signal
 *     interrupts the wait with EINTR): a library must not install signal
 *     handlers or take a signal number from the application it lives in,
 *     and a handler-less signal would kill the process;
 *   - a waiter thread blocked in F_OFD_SETLKW on the same open file
 *     description while the caller waits on a condition variable: a thread
 *     per contended wait, and at the deadline a grant may race in that must
 *     be undone (cancel, join, unlock): a blocked fcntl cannot be cancelled
 *     except by a signal, which brings back the first problem.
 * CKL_FOREVER keeps the blocking F_OFD_SETLKW (callers choose it).
 *
 * Marker-file locks (the soft locks, for NFS) use ckl__deadline_init_files:
 * an attempt there is several round trips to a file server, so no spin,
 * and the first sleep stays at 1 ms.
 */
#define CKL__SPIN_NS (100 * 1000LL)
#define CKL__BACKOFF_START_US 50
#define CKL__FILES_BACKOFF_START_US 1000
#define CKL__BACKOFF_CAP_US (64 * 1000)

static void deadline_init(ckl__deadline *d, int64_t timeout_ms, int spin, int64_t start_us) {
  d->timeout_ms = timeout_ms;
  d->end_ns = timeout_ms > 0 ? ckl__now_monotonic_ns() + timeout_ms * 1000000LL : 0;
  d->spin = spin;
  d->spin_end_ns = 0; /* set at the first busy answer */
  d->backoff_us = start_us;
}

void ckl__deadline_init(ckl__deadline *d, int64_t timeout_ms) {
  deadline_init(d, timeout_ms, 1, CKL__BACKOFF_START_US);
}

void ckl__deadline_init_files(ckl__deadline *d, int64_t timeout_ms) {
  deadline_init(d, timeout_ms, 0, CKL__FILES_BACKOFF_START_US);
}

/* Within the spin window (opening it at the first call)? Yields if so. */
static bool spin_step(ckl__deadline *d, int64_t now) {
  if (!d->spin) return false;
  if (d->spin_end_ns == 0) d->spin_end_ns = now + CKL__SPIN_NS;
  if (now >= d->spin_end_ns) return false;
  sched_yield();
  return true;
}

bool ckl__deadline_spin(ckl__deadline *d) {
  if (d->timeout_ms == CKL_TRY) return false;
  int64_t now = ckl__now_monotonic_ns();
  if (d->timeout_ms > 0 && now >= d->end_ns) return false;
  return spin_step(d, now);
}

bool ckl__deadline_backoff(ckl__deadline *d) {
  if (d->timeout_ms == CKL_TRY) return false;
  int64_t now = ckl__now_monotonic_ns();
  if (d->timeout_ms > 0 && now >= d->end_ns) return false;
  if (spin_step(d, now)) return true;
  int64_t step = d->backoff_us;
  int64_t sleep_us = step / 2 + (int64_t)(ckl__random_u64() % (uint64_t)(step / 2 + 1));
  if (d->timeout_ms > 0) {
    int64_t left_us = (d->end_ns - now) / 1000;
    if (left_us <= 0) return false;
    if (sleep_us > left_us) sleep_us = left_us;
  }
  struct timespec ts = {.tv_sec = sleep_us / 1000000, .tv_nsec = (sleep_us % 1000000) * 1000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
  if (d->backoff_us < CKL__BACKOFF_CAP_US) {
    d->backoff_us *= 2;
    if (d->backoff_us > CKL__BACKOFF_CAP_US) d->backoff_us = CKL__BACKOFF_CAP_US;
  }
  return true;
}

int ckl__strlcpy(char *dst, const char *src, size_t n) {
  size_t len = strlen(src);
  if (n == 0) return -ENAMETOOLONG;
  if (len >= n) {
    memcpy(dst, src, n - 1);
    dst[n - 1] = '\0';
    return -ENAMETOOLONG;
  }
  memcpy(dst, src, len + 1);
  return 0;
}

int ckl__pathf(char *dst, size_t n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int len = vsnprintf(dst, n, fmt, ap);
  va_end(ap);
  if (len < 0) return -EINVAL;
  if ((size_t)len >= n) return -ENAMETOOLONG;
  return len;
}

ssize_t ckl__pread_upto(int fd, void *buf, size_t cap, off_t off) {
  char *p = buf;
  size_t got = 0;
  while (got < cap) {
    /* A read may return less than asked before the end (a signal): go on
     * until it returns 0. */
    ssize_t n = pread(fd, p + got, cap - got, off + (off_t)got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) break;
    got += (size_t)n;
  }
  return (ssize_t)got;
}

int ckl__write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    /* One write may move less than asked (a signal, a huge len): go on
     * from where it stopped. */
    size_t step = len > ((size_t)1 << 30) ? ((size_t)1 << 30) : len;
    ssize_t n = write(fd, p, step);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) return -EIO; /* not for a regular file; never loop on it */
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

void ckl__close(int fd) {
  if (fd < 0) return;
  int saved = errno;
  close(fd);
  errno = saved;
}

size_t ckl_holder_format(const ckl_holder *h, char *buf, size_t len) {
  if (!buf || len == 0) return 0;
  int n;
  if (!h || !h->known) {
    n = snprintf(buf, len, "an unknown holder");
  } else {
    char since[32] = "?";
    if (h->since_ns > 0) ckl__format_time(h->since_ns, since, sizeof since);
    n = snprintf(buf, len, "%s (pid %lld on %s, since %s)",
                 h->operation[0] ? h->operation : "lock holder", (long long)h->pid,
                 h->host[0] ? h->host : "?", since);
  }
  if (n < 0) {
    buf[0] = '\0';
    return 0;
  }
  return (size_t)n < len ? (size_t)n : len - 1;
}

/* common/util.c - clocks, identity, deadlines, small string helpers. */
#include <pthread.h>
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

/* Backoff: start at 1 ms, double to a 64 ms cap, sleep a uniformly random
 * 50-100 % of the step (jitter keeps waiters from retrying in lockstep),
 * never past the deadline. */
#define CKL__BACKOFF_START_MS 1
#define CKL__BACKOFF_CAP_MS 64

void ckl__deadline_init(ckl__deadline *d, int64_t timeout_ms) {
  d->timeout_ms = timeout_ms;
  d->end_ns = timeout_ms > 0 ? ckl__now_monotonic_ns() + timeout_ms * 1000000LL : 0;
  d->backoff_ms = CKL__BACKOFF_START_MS;
}

bool ckl__deadline_backoff(ckl__deadline *d) {
  if (d->timeout_ms == CKL_TRY) return false;
  int64_t step = d->backoff_ms;
  int64_t sleep_us = step * 500 + (int64_t)(ckl__random_u64() % (uint64_t)(step * 500 + 1));
  if (d->timeout_ms > 0) {
    int64_t left_us = (d->end_ns - ckl__now_monotonic_ns()) / 1000;
    if (left_us <= 0) return false;
    if (sleep_us > left_us) sleep_us = left_us;
  }
  struct timespec ts = {.tv_sec = sleep_us / 1000000, .tv_nsec = (sleep_us % 1000000) * 1000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
  if (d->backoff_ms < CKL__BACKOFF_CAP_MS) d->backoff_ms *= 2;
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

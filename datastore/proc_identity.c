/* datastore/proc_identity.c - host id, boot id, pid namespace, pid start
 * times and the liveness test the roster's reaper relies on. */
#include "datastore/proc_identity.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/internal.h"

/* Read at most cap-1 bytes of a small file into buf, NUL-terminated.
 * Returns the length or -errno. */
static ssize_t read_small(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return -errno;
  size_t got = 0;
  while (got + 1 < cap) {
    ssize_t n = read(fd, buf + got, cap - 1 - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = -errno;
      ckl__close(fd);
      return e;
    }
    if (n == 0) break;
    got += (size_t)n;
  }
  ckl__close(fd);
  buf[got] = '\0';
  return (ssize_t)got;
}

/* Strip trailing whitespace; true if what is left is non-empty and made of
 * characters in `allowed`. */
static bool trim_and_check(char *s, const char *allowed) {
  size_t n = strlen(s);
  while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = '\0';
  return n > 0 && strspn(s, allowed) == n;
}

static pthread_once_t ident_once = PTHREAD_ONCE_INIT;
static ckl__host_ident ident;

static void ident_init(void) {
  char buf[128];
  ckl__strlcpy(ident.hostname, ckl__hostname(), sizeof ident.hostname);

  ssize_t n = read_small("/etc/machine-id", buf, sizeof buf);
  if (n > 0 && trim_and_check(buf, "0123456789abcdef") && strlen(buf) == 32) {
    ckl__strlcpy(ident.host_id, buf, sizeof ident.host_id);
  } else {
    /* No machine id (minimal containers): the host name is the next best
     * thing. Prefixed so it can never equal a real machine id. */
    snprintf(ident.host_id, sizeof ident.host_id, "host:%s", ident.hostname);
  }

  n = read_small("/proc/sys/kernel/random/boot_id", buf, sizeof buf);
  if (n > 0 && trim_and_check(buf, "0123456789abcdef-") && strlen(buf) <= CKL__BOOT_ID_MAX)
    ckl__strlcpy(ident.boot_id, buf, sizeof ident.boot_id);

  struct stat st;
  if (stat("/proc/self/ns/pid", &st) == 0) ident.pidns = (uint64_t)st.st_ino;
}

const ckl__host_ident *ckl__host_identity(void) {
  pthread_once(&ident_once, ident_init);
  return &ident;
}

int ckl__proc_stat_parse(const char *buf, size_t len, char *state, uint64_t *starttime) {
  /* "pid (comm) S ppid pgrp ...": comm is whatever the process named
   * itself (up to 15 bytes, may hold ")", spaces, even ") Z 1 ("), so the
   * only reliable anchor is the last ')'. */
  const char *rp = len ? memrchr(buf, ')', len) : NULL;
  if (!rp) return CKL_ECORRUPT;
  const char *p = rp + 1, *end = buf + len;
  if (end - p < 3 || p[0] != ' ' || p[2] != ' ') return CKL_ECORRUPT;
  char st = p[1];
  p += 3; /* at field 4 */
  /* Skip fields 4..21 (18 fields), then parse field 22. */
  for (int field = 4; field < 22; field++) {
    const char *sp = memchr(p, ' ', (size_t)(end - p));
    if (!sp || sp == p) return CKL_ECORRUPT;
    p = sp + 1;
  }
  uint64_t v = 0;
  int digits = 0;
  while (p < end && *p >= '0' && *p <= '9') {
    if (v > (UINT64_MAX - 9) / 10) return CKL_ECORRUPT;
    v = v * 10 + (uint64_t)(*p - '0');
    p++;
    digits++;
  }
  if (digits == 0 || (p < end && *p != ' ' && *p != '\n')) return CKL_ECORRUPT;
  if (state) *state = st;
  if (starttime) *starttime = v;
  return 0;
}

int ckl__pid_stat(int64_t pid, char *state, uint64_t *starttime) {
  if (pid <= 0 || pid > INT32_MAX) return -EINVAL;
  char path[64], buf[2048];
  snprintf(path, sizeof path, "/proc/%lld/stat", (long long)pid);
  ssize_t n = read_small(path, buf, sizeof buf);
  if (n < 0) return n == -ESRCH ? -ENOENT : (int)n;
  return ckl__proc_stat_parse(buf, (size_t)n, state, starttime);
}

/* Invariant: self_start is the start time of self_pid; a forked child sees
 * getpid() != self_pid and recomputes its own. */
static pthread_mutex_t self_mu = PTHREAD_MUTEX_INITIALIZER;
static pid_t self_pid;
static uint64_t self_start;

int ckl__self_start_time(uint64_t *out) {
  pid_t me = ckl__getpid();
  pthread_mutex_lock(&self_mu);
  if (self_pid == me) {
    *out = self_start;
    pthread_mutex_unlock(&self_mu);
    return 0;
  }
  pthread_mutex_unlock(&self_mu);
  uint64_t v = 0;
  int rc = ckl__pid_stat(me, NULL, &v);
  if (rc < 0) {
    *out = 0;
    return rc;
  }
  pthread_mutex_lock(&self_mu);
  self_pid = me;
  self_start = v;
  pthread_mutex_unlock(&self_mu);
  *out = v;
  return 0;
}

ckl__liveness ckl__pid_liveness(int64_t pid, uint64_t starttime) {
  if (pid <= 0 || pid > INT32_MAX) return CKL__PID_DEAD;
  char st = 0;
  uint64_t start = 0;
  int rc = ckl__pid_stat(pid, &st, &start);
  if (rc == -ENOENT) {
    /* /proc says no, but with hidepid= another user's processes are
     * invisible there too: only ESRCH from kill() proves death. */
    if (kill((pid_t)pid, 0) == 0 || errno == EPERM) return CKL__PID_UNVERIFIED;
    return CKL__PID_DEAD;
  }
  if (rc < 0) return CKL__PID_UNVERIFIED; /* cannot tell: never guess "dead" */
  /* A zombie has exited: it will never refresh or deregister, its parent
   * just has not waited for it yet. 'X' is the dying instant after that. */
  if (st == 'Z' || st == 'X') return CKL__PID_DEAD;
  /* A holder that could not read its own start time recorded 0: its pid
   * is all we can check, and it exists. */
  if (starttime == 0) return CKL__PID_UNVERIFIED;
  if (start != starttime) return CKL__PID_DEAD; /* the pid was reused */
  return CKL__PID_ALIVE;
}

/* Helpers shared by the soft lock suites (header-only; each suite is its
 * own binary). A test clock steps time instead of sleeping: every lock
 * handle gets its own boot offset (its own "machine") and all share one
 * wall offset (the "cluster's" time), stored in shared memory so forked
 * children see the same steps.
 *
 * Frozen time: a test that checks a boundary ("busy 50 ms before the TTL
 * runs out, free 50 ms after") must not let real time run between the
 * stamp and the check, or a loaded machine crosses the boundary for it.
 * Such a test freezes the clock (sl_freeze_wall, sl_freeze_boot): it then
 * reads a fixed base plus the offsets. The library stamps markers with
 * this clock (futimens), so their ages are exactly the offsets; a file the
 * kernel stamps (a planted marker, a ctime) must be stamped explicitly
 * (sl_stamp) to mean anything against a frozen clock. */
#ifndef CKL_TEST_SOFTLOCK_UTIL_H
#define CKL_TEST_SOFTLOCK_UTIL_H

#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/internal.h"
#include "locks/softlock_internal.h"

#define MS (1000000LL)
#define SEC (1000000000LL)
/* When a marker last stamped at t is stale: after t + TTL + slack. */
#define STALE_MS(ttl_ms) ((ttl_ms) + ckl__softlock_slack_ns((ttl_ms) * MS) / MS)

typedef struct tclock {
  _Atomic int64_t *wall_off;  /* shared by every handle of one test */
  _Atomic int64_t boot_off;   /* this handle's machine */
  _Atomic int64_t *wall_base; /* frozen wall time, shared; NULL or 0: real */
  _Atomic int64_t boot_base;  /* frozen boot time; 0: real */
} tclock;

/* The wall clock of a test: base (or, unfrozen, now) plus offset. */
static inline int64_t sl_wall(_Atomic int64_t *base, _Atomic int64_t *off) {
  int64_t b = base ? atomic_load(base) : 0;
  return (b ? b : ckl__now_realtime_ns()) + atomic_load(off);
}

static int64_t tclock_fn(ckl_softlock_clock_id which, void *ctx) {
  tclock *c = ctx;
  if (which == CKL_SOFTLOCK_CLOCK_WALL) return sl_wall(c->wall_base, c->wall_off);
  int64_t b = atomic_load(&c->boot_base);
  return (b ? b : ckl__now_boottime_ns()) + atomic_load(&c->boot_off);
}

static inline void sl_freeze_wall(_Atomic int64_t *base) {
  atomic_store(base, ckl__now_realtime_ns());
}

static inline void sl_freeze_boot(tclock *c) { atomic_store(&c->boot_base, ckl__now_boottime_ns()); }

/* Stamp a file's mtime (and atime) with a clock reading, as the library
 * stamps its markers. */
static inline void sl_stamp(const char *path, int64_t ns) {
  struct timespec ts[2] = {{.tv_sec = ns / SEC, .tv_nsec = ns % SEC}};
  ts[1] = ts[0];
  assert_int_equal(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW), 0);
}

/* Options for a handle on "host" with its own clock c, external heartbeat
 * (the test drives refresh), the given TTL. */
static inline ckl_softlock_opts sl_opts(tclock *c, const char *host, int64_t ttl_ms) {
  ckl_softlock_opts o;
  memset(&o, 0, sizeof o);
  o.timeout_ms = CKL_TRY;
  o.ttl_ms = ttl_ms;
  o.heartbeat = CKL_SOFTLOCK_HEARTBEAT_EXTERNAL;
  o.host_id = host;
  o.clock = tclock_fn;
  o.clock_ctx = c;
  return o;
}

static inline int sl_exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

/* Path of a sibling marker: base + suffix (".write", ".state", ".readers"). */
static inline char *sl_sib(const char *base, const char *suffix) {
  char *p = NULL;
  if (asprintf(&p, "%s%s", base, suffix) < 0) abort();
  return p;
}

/* The token in the marker at path ("" if it does not parse). */
static inline void sl_token_of(const char *path, char out[CKL_TOKEN_HEX_LEN + 1]) {
  out[0] = '\0';
  size_t len = 0;
  char *buf = ckl_test_read_file(path, &len);
  if (!buf) return;
  ckl__softlock_marker m;
  if (ckl__softlock_marker_parse(buf, len, &m) == 0) memcpy(out, m.token, CKL_TOKEN_HEX_LEN + 1);
  free(buf);
}

/* A well-formed marker text for this machine (boot id, pid namespace). */
static inline int sl_marker_text(char *buf, size_t len, const char *host, int64_t pid,
                                 const char *token) {
  ckl__softlock_marker m;
  memset(&m, 0, sizeof m);
  ckl__strlcpy(m.token, token, sizeof m.token);
  ckl__strlcpy(m.host, host, sizeof m.host);
  ckl__strlcpy(m.boot, ckl__softlock_boot_id(), sizeof m.boot);
  m.pidns = ckl__softlock_pidns();
  m.pid = pid;
  m.created_ns = ckl__now_realtime_ns();
  ckl__strlcpy(m.op, "planted", sizeof m.op);
  return ckl__softlock_marker_format(&m, buf, len);
}

/* A pid that is certainly dead: a reaped child's. */
static inline pid_t sl_dead_pid(void) {
  pid_t pid = fork();
  if (pid == 0) _exit(0);
  assert_true(pid > 0);
  assert_int_equal(ckl_test_wait(pid), 0);
  return pid;
}

#endif

/*
 * common/failpoint.c - armed failpoints and their actions.
 *
 * Fast path: ckl__failpoints_armed counts armed points; while it is 0 a
 * site is one relaxed load (see CKL_FAILPOINT in internal.h). A relaxed
 * load is enough: arming happens-before the racing thread's site only if
 * the test synchronises with that thread anyway (it must, to mean
 * anything), and a site that misses an arm by a hair is indistinguishable
 * from one that ran a moment earlier.
 *
 * Slow path: a mutex-protected table of armed points. Actions that block
 * (sleep, pause, pausefile) run with the mutex released.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "internal.h"



atomic_int ckl__failpoints_armed = 0;

typedef struct fp_catalog_entry {
  const char *name;
  const char *desc;
} fp_catalog_entry;

static const fp_catalog_entry catalog[] = {
#define CKL_FP(n, d) {n, d},
#include "failpoints.def"
#undef CKL_FP
};

enum fp_action { FP_OFF = 0, FP_COUNT, FP_SLEEP, FP_ERROR, FP_CRASH, FP_PAUSE, FP_PAUSEFILE };

typedef struct fp_state {
  enum fp_action action;
  int64_t arg;          /* ms for sleep, code for error */
  char dir[256];        /* for pausefile */
  int64_t remaining;    /* fires left; -1 = unlimited */
  uint64_t hits;
  uint64_t release_gen; /* bumped by release/disarm; pausers wait for a change */
  bool armed;
} fp_state;

static pthread_mutex_t fp_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fp_cond = PTHREAD_COND_INITIALIZER;
static fp_state states[CKL__ARRAY_SIZE(catalog)];

/* The trace hook, read under fp_mutex at each hit and called after it is
 * released: a pair (fn, arg) is always seen whole. */
static ckl_failpoint_trace_fn trace_fn;
static void *trace_arg;

static int env_status;
static const char *env_detail = "";

size_t ckl_failpoint_count(void) { return CKL__ARRAY_SIZE(catalog); }

const char *ckl_failpoint_catalog(size_t i, const char **description) {
  if (i >= CKL__ARRAY_SIZE(catalog)) return NULL;
  if (description) *description = catalog[i].desc;
  return catalog[i].name;
}

static int find(const char *name, size_t len) {
  for (size_t i = 0; i < CKL__ARRAY_SIZE(catalog); i++)
    if (strlen(catalog[i].name) == len && memcmp(catalog[i].name, name, len) == 0) return (int)i;
  return -1;
}

static bool parse_num(const char *s, size_t len, int64_t *out) {
  if (len == 0 || len > 18) return false;
  int64_t v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

/* Parse one action ("2*sleep(10)") of length len into st (not armed yet). */
static int parse_action(const char *a, size_t len, fp_state *st) {
  memset(st, 0, sizeof *st);
  st->remaining = -1;
  const char *star = memchr(a, '*', len);
  if (star) {
    int64_t n;
    if (!parse_num(a, (size_t)(star - a), &n) || n <= 0) return CKL_EFAILPOINT;
    st->remaining = n;
    len -= (size_t)(star + 1 - a);
    a = star + 1;
  }
  const char *paren = memchr(a, '(', len);
  size_t kw = paren ? (size_t)(paren - a) : len;
  const char *arg = NULL;
  size_t arglen = 0;
  if (paren) {
    if (a[len - 1] != ')') return CKL_EFAILPOINT;
    arg = paren + 1;
    arglen = len - kw - 2;
  }
#define KW(s) (kw == sizeof(s) - 1 && memcmp(a, s, kw) == 0)
  if (KW("off") && !paren) st->action = FP_OFF;
  else if (KW("count") && !paren) st->action = FP_COUNT;
  else if (KW("crash") && !paren) st->action = FP_CRASH;
  else if (KW("pause") && !paren) st->action = FP_PAUSE;
  else if (KW("sleep") && paren) {
    st->action = FP_SLEEP;
    if (!parse_num(arg, arglen, &st->arg)) return CKL_EFAILPOINT;
  } else if (KW("error") && paren) {
    int code;
    st->action = FP_ERROR;
    if (ckl__err_parse(arg, arglen, &code) < 0) return CKL_EFAILPOINT;
    st->arg = code;
  } else if (KW("pausefile") && paren) {
    st->action = FP_PAUSEFILE;
    if (arglen == 0 || arglen >= sizeof st->dir) return CKL_EFAILPOINT;
    memcpy(st->dir, arg, arglen);
    st->dir[arglen] = '\0';
  } else {
    return CKL_EFAILPOINT;
  }
#undef KW
  return 0;
}

/* Install a parsed state at index i. Caller holds fp_mutex. */
static void install(int i, const fp_state *st) {
  fp_state *cur = &states[i];
  bool was = cur->armed;
  uint64_t gen = cur->release_gen + 1; /* wake anyone paused on the old action */
  *cur = *st;
  cur->release_gen = gen;
  cur->armed = st->action != FP_OFF;
  cur->hits = 0;
  if (was != cur->armed) atomic_fetch_add(&ckl__failpoints_armed, cur->armed ? 1 : -1);
  pthread_cond_broadcast(&fp_cond);
}

int ckl_failpoint_arm(const char *name, const char *action) {
  if (!name || !action) return CKL_EFAILPOINT;
  int i = find(name, strlen(name));
  if (i < 0) return CKL_EFAILPOINT;
  fp_state st;
  int rc = parse_action(action, strlen(action), &st);
  if (rc < 0) return rc;
  pthread_mutex_lock(&fp_mutex);
  install(i, &st);
  pthread_mutex_unlock(&fp_mutex);
  return 0;
}

int ckl_failpoint_arm_spec(const char *spec) {
  if (!spec) return CKL_EFAILPOINT;
  /* Two passes: validate everything, then install, so a typo arms nothing. */
  for (int pass = 0; pass < 2; pass++) {
    const char *p = spec;
    if (pass == 1) pthread_mutex_lock(&fp_mutex);
    while (*p) {
      const char *end = strchr(p, ';');
      size_t len = end ? (size_t)(end - p) : strlen(p);
      if (len > 0) {
        const char *eq = memchr(p, '=', len);
        if (!eq) return pass ? (pthread_mutex_unlock(&fp_mutex), CKL_EFAILPOINT) : CKL_EFAILPOINT;
        int i = find(p, (size_t)(eq - p));
        fp_state st;
        if (i < 0 || parse_action(eq + 1, len - (size_t)(eq + 1 - p), &st) < 0) {
          if (pass) pthread_mutex_unlock(&fp_mutex);
          return CKL_EFAILPOINT;
        }
        if (pass) install(i, &st);
      }
      p += len;
      if (*p == ';') p++;
    }
    if (pass == 1) pthread_mutex_unlock(&fp_mutex);
  }
  return 0;
}

int ckl_failpoint_disarm(const char *name) {
  if (!name) return CKL_EFAILPOINT;
  int i = find(name, strlen(name));
  if (i < 0) return CKL_EFAILPOINT;
  fp_state off = {.action = FP_OFF, .remaining = -1};
  pthread_mutex_lock(&fp_mutex);
  install(i, &off);
  pthread_mutex_unlock(&fp_mutex);
  return 0;
}

void ckl_failpoint_disarm_all(void) {
  fp_state off = {.action = FP_OFF, .remaining = -1};
  pthread_mutex_lock(&fp_mutex);
  for (size_t i = 0; i < CKL__ARRAY_SIZE(catalog); i++) install((int)i, &off);
  pthread_mutex_unlock(&fp_mutex);
}

static int waiting_count[CKL__ARRAY_SIZE(catalog)];

void ckl_failpoint_set_trace(ckl_failpoint_trace_fn fn, void *arg) {
  pthread_mutex_lock(&fp_mutex);
  trace_fn = fn;
  trace_arg = fn ? arg : NULL;
  pthread_mutex_unlock(&fp_mutex);
}

int ckl_failpoint_release(const char *name) {
  if (!name) return CKL_EFAILPOINT;
  int i = find(name, strlen(name));
  if (i < 0) return CKL_EFAILPOINT;
  pthread_mutex_lock(&fp_mutex);
  int woken = waiting_count[i];
  states[i].release_gen++;
  pthread_cond_broadcast(&fp_cond);
  pthread_mutex_unlock(&fp_mutex);
  return woken;
}

uint64_t ckl_failpoint_hits(const char *name) {
  if (!name) return 0;
  int i = find(name, strlen(name));
  if (i < 0) return 0;
  pthread_mutex_lock(&fp_mutex);
  uint64_t h = states[i].armed ? states[i].hits : 0;
  pthread_mutex_unlock(&fp_mutex);
  return h;
}

static void abs_deadline(struct timespec *ts, int64_t ms) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

int ckl_failpoint_wait_hits(const char *name, uint64_t n, int64_t timeout_ms) {
  if (!name) return CKL_EFAILPOINT;
  int i = find(name, strlen(name));
  if (i < 0) return CKL_EFAILPOINT;
  struct timespec ts;
  if (timeout_ms > 0) abs_deadline(&ts, timeout_ms);
  int rc = 0;
  pthread_mutex_lock(&fp_mutex);
  while (states[i].armed && states[i].hits < n) {
    if (timeout_ms == CKL_TRY) { rc = CKL_ETIMEDOUT; break; }
    if (timeout_ms < 0) pthread_cond_wait(&fp_cond, &fp_mutex);
    else if (pthread_cond_timedwait(&fp_cond, &fp_mutex, &ts) == ETIMEDOUT) {
      rc = states[i].hits >= n ? 0 : CKL_ETIMEDOUT;
      break;
    }
  }
  if (rc == 0 && !states[i].armed) rc = CKL_EFAILPOINT;
  pthread_mutex_unlock(&fp_mutex);
  return rc;
}

static void pausefile_wait(const char *dir, const char *name) {
  char path[512];
  if (ckl__pathf(path, sizeof path, "%s/%s.hit.%ld", dir, name, (long)ckl__getpid()) >= 0) {
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    ckl__close(fd);
  }
  if (ckl__pathf(path, sizeof path, "%s/%s.go", dir, name) < 0) return;
  struct stat st;
  while (stat(path, &st) != 0) ckl__sleep_ms(2);
}

int ckl__failpoint_hit(const char *name) {
  int i = find(name, strlen(name));
  if (i < 0) return 0; /* a site missing from the catalog; the check script catches it */
  pthread_mutex_lock(&fp_mutex);
  fp_state *st = &states[i];
  if (!st->armed) {
    pthread_mutex_unlock(&fp_mutex);
    return 0;
  }
  st->hits++;
  pthread_cond_broadcast(&fp_cond); /* for wait_hits */
  enum fp_action act = st->action;
  if (st->remaining == 0) act = FP_COUNT;
  else if (st->remaining > 0) st->remaining--;
  int64_t arg = st->arg;
  char dir[256];
  memcpy(dir, st->dir, sizeof dir);
  /* The generation is taken before the trace call drops the mutex, so a
   * release or re-arm that happens meanwhile still wakes this pause. */
  uint64_t gen = st->release_gen;
  ckl_failpoint_trace_fn tfn = trace_fn;
  void *targ = trace_arg;
  if (tfn) {
    pthread_mutex_unlock(&fp_mutex);
    tfn(catalog[i].name, targ);
    pthread_mutex_lock(&fp_mutex);
  }
  int rc = 0;
  switch (act) {
    case FP_PAUSE: {
      waiting_count[i]++;
      while (st->release_gen == gen) pthread_cond_wait(&fp_cond, &fp_mutex);
      waiting_count[i]--;
      break;
    }
    case FP_ERROR:
      rc = (int)arg;
      break;
    default:
      break;
  }
  pthread_mutex_unlock(&fp_mutex);
  switch (act) {
    case FP_SLEEP: ckl__sleep_ms(arg); break;
    case FP_CRASH: _exit(CKL_FAILPOINT_CRASH_STATUS);
    case FP_PAUSEFILE: pausefile_wait(dir, name); break;
    default: break;
  }
  if (rc < 0) ckl__log_debug("failpoint %s returns %s", name, ckl_err_name(rc));
  return rc;
}

int ckl_failpoint_env_status(const char **detail) {
  if (detail) *detail = env_detail;
  return env_status;
}

/* fork() from a multithreaded test must not leave the child with the
 * table mutex held by a thread that does not exist there. */
static void fp_prepare(void) { pthread_mutex_lock(&fp_mutex); }
static void fp_after(void) { pthread_mutex_unlock(&fp_mutex); }

__attribute__((constructor)) static void failpoint_env_init(void) {
  pthread_atfork(fp_prepare, fp_after, fp_after);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_destroy(&fp_cond);
  pthread_cond_init(&fp_cond, &ca);
  pthread_condattr_destroy(&ca);
  const char *spec = getenv("CHUNKLOCK_FAILPOINTS");
  if (!spec || !*spec) return;
  env_status = ckl_failpoint_arm_spec(spec);
  if (env_status < 0) env_detail = "CHUNKLOCK_FAILPOINTS: unknown failpoint name or malformed action";
}

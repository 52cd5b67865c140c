/* update_manifest from 8 threads and 4 processes at once, each adding its
 * own keys to "unprotected" 20 times: afterwards every key is present (no
 * lost update). Meanwhile a reader loads the manifest without a lock over
 * and over: every load succeeds (atomic replace: never a torn or missing
 * file) and the key count it sees never goes down (updates serialise). */
// ctest-labels: threads
#include "testutil.h"

#include <limits.h>
#define BIG (2 * PATH_MAX) /* room for a path plus a suffix, without truncation warnings */

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "datastore/store_internal.h"

#define SNAP "host/web/2026-11-21T15:07:43Z"
#define THREADS 8
#define PROCS 4
#define ROUNDS 20
#define DEADLINE_MS CKL_TEST_NEVER_MS /* waits behind up to 11 writers: never a guess */

static char *store_path;
static ckl_snapshot_name sn;

static int add_key(json_t *m, void *arg) {
  return json_object_set_new(json_object_get(m, "unprotected"), (const char *)arg,
                             json_integer(1)) == 0
             ? 0
             : -ENOMEM;
}

static atomic_int reader_loaded;

/* One writer's 20 updates; 0 or the first error. A writer thread makes
 * its last update only once the reader has loaded: the reader loads until
 * every writer is done, so the two overlap by construction (a reader
 * descheduled for the whole update phase used to load nothing, and
 * loads > 0 failed). */
static int updates(ckl_store *st, const char *who, int wait_for_reader) {
  ckl_manifest_update_opts o = {.timeout_ms = DEADLINE_MS};
  for (int i = 0; i < ROUNDS; i++) {
    if (wait_for_reader && i == ROUNDS - 1)
      while (!atomic_load(&reader_loaded)) sched_yield();
    char key[64];
    snprintf(key, sizeof key, "%s-%02d", who, i);
    int rc = ckl_update_manifest(st, &sn, add_key, key, &o);
    if (rc < 0) return rc;
  }
  return 0;
}

typedef struct thread_arg {
  ckl_store *st;
  char who[16];
  int rc;
} thread_arg;

static void *writer(void *p) {
  thread_arg *a = p;
  a->rc = updates(a->st, a->who, 1);
  return NULL;
}

static atomic_int writers_done;

typedef struct reader_arg {
  ckl_store *st;
  int rc;
  long loads;
  size_t max_seen;
} reader_arg;

static void *reader(void *p) {
  reader_arg *r = p;
  while (!atomic_load(&writers_done)) {
    json_t *m;
    int rc = ckl_manifest_load(r->st, &sn, &m);
    if (rc < 0) {
      r->rc = rc;
      atomic_store(&reader_loaded, 1); /* no writer waits for a reader that stopped */
      return NULL;
    }
    size_t n = json_object_size(json_object_get(m, "unprotected"));
    json_decref(m);
    if (n < r->max_seen) {
      r->rc = -EDOM; /* an update was undone */
      atomic_store(&reader_loaded, 1);
      return NULL;
    }
    r->max_seen = n;
    if (r->loads++ == 0) atomic_store(&reader_loaded, 1);
  }
  return NULL;
}

static int go_pipe[2];

static int child(void *arg) {
  int idx = (int)(intptr_t)arg;
  close(go_pipe[1]);
  char c;
  if (read(go_pipe[0], &c, 1) != 0) return 10; /* EOF is the start signal */
  ckl_store *st;
  if (ckl_store_open(store_path, NULL, &st) != 0) return 11;
  char who[16];
  snprintf(who, sizeof who, "p%d", idx);
  int rc = updates(st, who, 0);
  ckl_store_close(st);
  return rc == 0 ? 0 : 12;
}

static void test_no_lost_update(void **state) {
  (void)state;
  char *dir = ckl_test_mkdtemp("manifest-mt");
  store_path = ckl_test_path(dir, "store");
  ckl_store_create_opts co = {.sync = CKL_SYNC_NONE};
  assert_int_equal(ckl_store_create(store_path, &co), 0);
  ckl_store *st;
  assert_int_equal(ckl_store_open(store_path, NULL, &st), 0);
  assert_int_equal(ckl_snapshot_name_parse(SNAP, &sn), 0);
  char p[BIG];
  snprintf(p, sizeof p, "%s/host", store_path);
  assert_int_equal(mkdir(p, 0755), 0);
  snprintf(p, sizeof p, "%s/host/web", store_path);
  assert_int_equal(mkdir(p, 0755), 0);
  snprintf(p, sizeof p, "%s/" SNAP, store_path);
  assert_int_equal(mkdir(p, 0755), 0);
  json_t *m;
  assert_int_equal(ckl_manifest_new(&sn, &m), 0);
  assert_int_equal(ckl_manifest_write_new(st, &sn, m, 0), 0);
  json_decref(m);

  /* Processes first, while this process has no other thread to fork. */
  assert_int_equal(pipe(go_pipe), 0);
  pid_t pids[PROCS];
  for (int i = 0; i < PROCS; i++) pids[i] = ckl_test_fork(child, (void *)(intptr_t)i);
  close(go_pipe[0]);

  thread_arg ta[THREADS];
  pthread_t tt[THREADS], rt;
  reader_arg ra = {.st = st};
  atomic_store(&writers_done, 0);
  atomic_store(&reader_loaded, 0);
  assert_int_equal(pthread_create(&rt, NULL, reader, &ra), 0);
  for (int i = 0; i < THREADS; i++) {
    ta[i] = (thread_arg){.st = st, .rc = 1};
    snprintf(ta[i].who, sizeof ta[i].who, "t%d", i);
    assert_int_equal(pthread_create(&tt[i], NULL, writer, &ta[i]), 0);
  }
  close(go_pipe[1]); /* start the processes */
  for (int i = 0; i < THREADS; i++) {
    assert_int_equal(pthread_join(tt[i], NULL), 0);
    assert_int_equal(ta[i].rc, 0);
  }
  for (int i = 0; i < PROCS; i++) assert_int_equal(ckl_test_wait(pids[i]), 0);
  atomic_store(&writers_done, 1);
  assert_int_equal(pthread_join(rt, NULL), 0);
  assert_int_equal(ra.rc, 0);
  assert_true(ra.loads > 0);

  assert_int_equal(ckl_manifest_load(st, &sn, &m), 0);
  json_t *u = json_object_get(m, "unprotected");
  assert_int_equal(json_object_size(u), (THREADS + PROCS) * ROUNDS);
  for (int w = 0; w < THREADS + PROCS; w++) {
    for (int i = 0; i < ROUNDS; i++) {
      char key[64];
      snprintf(key, sizeof key, "%s%d-%02d", w < THREADS ? "t" : "p",
               w < THREADS ? w : w - THREADS, i);
      if (!json_object_get(u, key)) fail_msg("lost update: %s", key);
    }
  }
  /* The protected part is what write_new wrote. */
  assert_int_equal(ckl_manifest_validate(m, &sn), 0);
  assert_int_equal(json_array_size(json_object_get(m, "files")), 0);
  json_decref(m);
  /* No temp file left beside the manifest. */
  assert_int_equal(ckl_test_count_entries(p, NULL), 1);
  ckl_store_close(st);
  ckl_test_rmtree(dir);
  free(store_path);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_no_lost_update)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The coordination state environment: creation, recovery from garbage,
 * truncation and damaged pages (at open and at run time), a previous
 * boot's state, files replaced under a running process, map growth (one
 * thread, many threads, another process), and fork. */
// ctest-labels: threads
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/internal.h"
#include "datastore/proc_identity.h"
#include "datastore/state.h"

static char *store;


static int setup(void **state) {
  (void)state;
  store = ckl_test_mkdtemp("state");
  ckl_test_log_capture();
  return 0;
}

static int teardown(void **state) {
  (void)state;
  ckl_failpoint_disarm_all();
  ckl_log_set(NULL, NULL, CKL_LOG_ERROR);
  ckl_test_rmtree(store);
  free(store);
  store = NULL;
  return 0;
}

static ckl__state *open_state(void) {
  ckl__state *st = NULL;
  assert_int_equal(ckl__state_open(store, &st), 0);
  return st;
}

static char *spath(const char *name) {
  char *sd = ckl_test_path(store, ".state");
  char *p = ckl_test_path(sd, name);
  free(sd);
  return p;
}

static size_t roster_count(ckl__state *st) {
  ckl__roster_list l;
  assert_int_equal(ckl__state_list(st, 0, &l, NULL), 0);
  size_t n = l.n;
  ckl__roster_list_free(&l);
  return n;
}

static void register_some(ckl__state *st, int n) {
  char target[200];
  for (int i = 0; i < n; i++) {
    snprintf(target, sizeof target, "vm/%d/2026-01-01T00:00:00Z/with/a/longer/target/path", i);
    ckl__roster_reg reg = {.operation = "read", .target = target};
    char tok[33];
    assert_int_equal(ckl__state_register(st, &reg, tok), 0);
  }
}

/* ---- opening and recovery ----------------------------------------------------- */

static void test_open_creates_state_dir(void **state) {
  (void)state;
  ckl__state *st = open_state();
  char *sd = ckl_test_path(store, ".state");
  struct stat sb;
  assert_int_equal(stat(sd, &sb), 0);
  assert_true(S_ISDIR(sb.st_mode));
  assert_int_equal(sb.st_mode & 0777, 0700);
  char *data = spath("data.mdb"), *boot = spath("boot");
  assert_int_equal(stat(data, &sb), 0);
  assert_int_equal(sb.st_mode & 0777, 0600);
  char *b = ckl_test_read_file(boot, NULL);
  assert_non_null(b);
  char want[64];
  snprintf(want, sizeof want, "%s\n", ckl__host_identity()->boot_id);
  assert_string_equal(b, want);
  assert_int_equal(ckl__state_map_size(st), CKL__STATE_MAP_SIZE);
  ckl__state_close(st);
  free(b);
  free(sd);
  free(data);
  free(boot);

  ckl__state *x;
  assert_int_equal(ckl__state_open("/nonexistent/store", &x), -ENOENT);
  assert_null(x);
}

static void test_state_path_errors(void **state) {
  (void)state;
  char *sd = ckl_test_path(store, ".state");
  ckl__state *x;
  ckl_test_write_file(sd, "", 0);
  assert_int_equal(ckl__state_open(store, &x), -ENOTDIR);
  assert_int_equal(unlink(sd), 0);
  char *elsewhere = ckl_test_mkdtemp("elsewhere");
  assert_int_equal(symlink(elsewhere, sd), 0);
  assert_int_equal(ckl__state_open(store, &x), -ELOOP);
  assert_true(ckl_test_logged(".state: cannot open the directory"));
  assert_int_equal(ckl_test_count_entries(elsewhere, NULL), 0); /* not followed */
  ckl_test_rmtree(elsewhere);
  free(elsewhere);
  free(sd);
}

/* Fill, close, damage data.mdb with `damage`, reopen: recreated, logged
 * with the file name, the damaged files kept aside, the state usable. */
static void damage_case(void (*damage)(const char *path), const char *cause) {
  ckl__state *st = open_state();
  register_some(st, 200);
  ckl__state_close(st); /* last handle: the environment is closed */
  char *data = spath("data.mdb");
  damage(data);

  st = open_state();
  assert_true(ckl_test_logged(".state/data.mdb is damaged or unreadable"));
  assert_true(ckl_test_logged(cause));
  char *aside = spath("data.mdb.damaged"), *laside = spath("lock.mdb.damaged");
  struct stat sb;
  assert_int_equal(stat(aside, &sb), 0);
  assert_int_equal(stat(laside, &sb), 0);
  assert_int_equal(roster_count(st), 0); /* a new, empty state */
  register_some(st, 3);
  assert_int_equal(roster_count(st), 3);
  ckl__state_close(st);
  free(data);
  free(aside);
  free(laside);
}

static void write_garbage(const char *path) {
  size_t len;
  char *old = ckl_test_read_file(path, &len);
  assert_non_null(old);
  for (size_t i = 0; i < len; i++) old[i] = (char)(i * 131 + 7);
  ckl_test_write_file(path, old, len);
  free(old);
}

static void truncate_to_3_pages(const char *path) { assert_int_equal(truncate(path, 12288), 0); }

static void zero_pages_after_meta(const char *path) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  assert_true(fd >= 0);
  static char zeros[4096 * 8];
  assert_int_equal(pwrite(fd, zeros, sizeof zeros, 8192), (ssize_t)sizeof zeros);
  close(fd);
}

static void test_garbage_data_mdb_recreated(void **state) {
  (void)state;
  damage_case(write_garbage, "File is not an LMDB file");
}

static void test_truncated_data_mdb_recreated(void **state) {
  (void)state;
  damage_case(truncate_to_3_pages, "truncated: 12288 bytes");
}

static void test_damaged_pages_recreated(void **state) {
  (void)state;
  damage_case(zero_pages_after_meta, "MDB_CORRUPTED");
}

/* Damage found by a running process: that call fails with CKL_ECORRUPT,
 * the next one recovers. */
static void test_runtime_damage_recovered(void **state) {
  (void)state;
  ckl__state *st = open_state();
  register_some(st, 200);
  char *data = spath("data.mdb");
  zero_pages_after_meta(data);
  ckl__roster_list l;
  assert_int_equal(ckl__state_list(st, 0, &l, NULL), CKL_ECORRUPT);
  assert_true(ckl_test_logged("it will be recreated on next use"));
  assert_int_equal(roster_count(st), 0);
  assert_true(ckl_test_logged(".state/data.mdb is damaged or unreadable"));
  register_some(st, 2);
  assert_int_equal(roster_count(st), 2);
  ckl__state_close(st);
  free(data);
}

/* An environment written during another boot is discarded unread. */
static void test_previous_boot_discarded(void **state) {
  (void)state;
  ckl__state *st = open_state();
  register_some(st, 5);
  ckl__state_close(st);
  char *boot = spath("boot");
  ckl_test_write_file(boot, "11111111-2222-3333-4444-555555555555\n", 37);
  st = open_state();
  assert_true(ckl_test_logged("is from a previous boot"));
  assert_int_equal(roster_count(st), 0);
  char *b = ckl_test_read_file(boot, NULL);
  assert_non_null(strstr(b, ckl__host_identity()->boot_id));
  ckl__state_close(st);
  /* same boot: kept */
  st = open_state();
  register_some(st, 1);
  ckl__state_close(st);
  st = open_state();
  assert_int_equal(roster_count(st), 1);
  ckl__state_close(st);
  free(b);
  free(boot);
}

/* The files replaced under a running process: its leases are lost
 * (refresh/deregister -ENOENT), new calls use the new environment. */
static void test_replaced_state_loses_leases(void **state) {
  (void)state;
  ckl__state *a = open_state(), *b = open_state();
  char tok[33];
  ckl__roster_reg reg = {.operation = "backup"};
  assert_int_equal(ckl__state_register(a, &reg, tok), 0);
  char *sd = ckl_test_path(store, ".state"), *old = ckl_test_path(store, ".state.old");
  assert_int_equal(rename(sd, old), 0);
  assert_int_equal(ckl__state_refresh(a, tok, 1), -ENOENT);
  assert_true(ckl_test_logged("was replaced: using the new one"));
  assert_int_equal(ckl__state_deregister(b, tok), -ENOENT);
  assert_int_equal(roster_count(b), 0);
  char tok2[33];
  assert_int_equal(ckl__state_register(b, &reg, tok2), 0);
  assert_int_equal(ckl__state_deregister(a, tok2), 0);
  struct stat sb;
  assert_int_equal(stat(sd, &sb), 0); /* recreated */
  ckl__state_close(a);
  ckl__state_close(b);
  free(sd);
  free(old);
}

static void test_map_growth(void **state) {
  (void)state;
  ckl__state_opts o = {.map_size = 64 << 10, .map_max = 64 << 20};
  ckl__state *st;
  assert_int_equal(ckl__state_open_opts(store, &o, &st), 0);
  assert_int_equal(ckl__state_map_size(st), 64 << 10);
  register_some(st, 3000);
  assert_true(ckl__state_map_size(st) > (64 << 10));
  assert_int_equal(roster_count(st), 3000);
  ckl__state_close(st);
}

static void test_map_limit(void **state) {
  (void)state;
  ckl__state_opts o = {.map_size = 64 << 10, .map_max = 128 << 10};
  ckl__state *st;
  assert_int_equal(ckl__state_open_opts(store, &o, &st), 0);
  int rc = 0;
  for (int i = 0; i < 5000 && rc == 0; i++) {
    ckl__roster_reg reg = {.operation = "read", .target = "a/fairly/long/target/name/to/fill"};
    char tok[33];
    rc = ckl__state_register(st, &reg, tok);
  }
  assert_int_equal(rc, -ENOSPC);
  assert_true(ckl_test_logged("is full at its maximum map size"));
  assert_int_equal(ckl__state_map_size(st), 128 << 10);
  ckl__state_close(st);
}

struct grow_thr {
  ckl__state *st;
  int idx, fails;
};

static void *grow_thread(void *p) {
  struct grow_thr *g = p;
  char name[16], target[120];
  snprintf(name, sizeof name, "grow-%d", g->idx);
  pthread_setname_np(pthread_self(), name);
  for (int i = 0; i < 400; i++) {
    snprintf(target, sizeof target, "thread/%d/record/%d/padding-padding-padding", g->idx, i);
    ckl__roster_reg reg = {.operation = "read", .target = target};
    char tok[33];
    if (ckl__state_register(g->st, &reg, tok) != 0) g->fails++;
    if (i % 50 == 0 && roster_count(g->st) == 0) g->fails++;
  }
  return NULL;
}

/* Threads that hit a full map together grow it without losing a record
 * (growth waits until no transaction of the process is open). */
static void test_threads_grow_the_map(void **state) {
  (void)state;
  ckl__state_opts o = {.map_size = 64 << 10};
  ckl__state *st;
  assert_int_equal(ckl__state_open_opts(store, &o, &st), 0);
  struct grow_thr g[4];
  pthread_t th[4];
  for (int i = 0; i < 4; i++) {
    g[i] = (struct grow_thr){st, i, 0};
    assert_int_equal(pthread_create(&th[i], NULL, grow_thread, &g[i]), 0);
  }
  for (int i = 0; i < 4; i++) assert_int_equal(pthread_join(th[i], NULL), 0);
  for (int i = 0; i < 4; i++) assert_int_equal(g[i].fails, 0);
  assert_int_equal(roster_count(st), 1600);
  assert_true(ckl__state_map_size(st) > (64 << 10));
  ckl__state_close(st);
}

static int grow_child(void *arg) {
  (void)arg;
  ckl__state_opts o = {.map_size = 64 << 10};
  ckl__state *st;
  if (ckl__state_open_opts(store, &o, &st) != 0) return 10;
  char target[120];
  for (int i = 0; i < 3000; i++) {
    snprintf(target, sizeof target, "child/record/%d/padding-padding-padding-padding", i);
    ckl__roster_reg reg = {.operation = "read", .target = target};
    char tok[33];
    ckl__roster_ident id = {.host_id = "host:other", .boot_id = "b", .hostname = "other",
                            .pid = 1};
    if (ckl__state_register_as(st, &reg, &id, tok) != 0) return 11;
  }
  if (ckl__state_map_size(st) <= (64 << 10)) return 12;
  ckl__state_close(st);
  return 0;
}

/* Another process grew the map past ours: LMDB says MDB_MAP_RESIZED, we
 * adopt its size and read everything. */
static void test_map_grown_by_another_process(void **state) {
  (void)state;
  ckl__state_opts o = {.map_size = 64 << 10};
  ckl__state *st;
  assert_int_equal(ckl__state_open_opts(store, &o, &st), 0);
  assert_int_equal(roster_count(st), 0);
  pid_t pid = ckl_test_fork(grow_child, NULL);
  assert_int_equal(ckl_test_wait(pid), 0);
  assert_int_equal(ckl__state_map_size(st), 64 << 10);
  assert_int_equal(roster_count(st), 3000); /* foreign, no lease: all kept */
  assert_true(ckl__state_map_size(st) > (64 << 10));
  ckl__state_close(st);
}

struct fork_arg {
  ckl__state *inherited;
};

static int fork_child(void *p) {
  struct fork_arg *a = p;
  ckl__roster_reg reg = {.operation = "read"};
  char tok[33];
  if (ckl__state_register(a->inherited, &reg, tok) != -ECHILD) return 10;
  ckl__state_close(a->inherited); /* no-op in the child */
  ckl__state *own;
  if (ckl__state_open(store, &own) != 0) return 11;
  if (ckl__state_register(own, &reg, tok) != 0) return 12;
  if (ckl__state_deregister(own, tok) != 0) return 13;
  ckl__state_close(own);
  return 0;
}

static void test_fork_inherited_handle_refuses(void **state) {
  (void)state;
  struct fork_arg a = {open_state()};
  pid_t pid = ckl_test_fork(fork_child, &a);
  assert_int_equal(ckl_test_wait(pid), 0);
  assert_int_equal(roster_count(a.inherited), 0); /* the parent's handle still works */
  ckl__state_close(a.inherited);
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_open_creates_state_dir),
      T(test_state_path_errors),
      T(test_garbage_data_mdb_recreated),
      T(test_truncated_data_mdb_recreated),
      T(test_damaged_pages_recreated),
      T(test_runtime_damage_recovered),
      T(test_previous_boot_discarded),
      T(test_replaced_state_loses_leases),
      T(test_map_growth),
      T(test_map_limit),
      T(test_threads_grow_the_map),
      T(test_map_grown_by_another_process),
      T(test_fork_inherited_handle_refuses),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

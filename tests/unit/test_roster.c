/* The roster: register / refresh / deregister, staleness across processes
 * (exited, killed, zombie, pid reused), foreign hosts and leases,
 * unparseable records, holder lookup, the record codec, /proc parsing,
 * concurrent threads, and the public chunklock/roster.h API. */
// ctest-labels: threads
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/internal.h"
#include "datastore/proc_identity.h"
#include "datastore/state.h"

#define SEC 1000000000LL

static char *store; /* per test */

static int setup(void **state) {
  (void)state;
  store = ckl_test_mkdtemp("roster");
  char *chunks = ckl_test_path(store, ".chunks");
  assert_int_equal(mkdir(chunks, 0700), 0);
  free(chunks);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  ckl_failpoint_disarm_all();
  ckl_test_rmtree(store);
  free(store);
  store = NULL;
  return 0;
}

static ckl__state *open_state(void) {
  ckl__state *st = NULL;
  assert_int_equal(ckl__state_open(store, &st), 0);
  assert_non_null(st);
  return st;
}

/* Find a token in a listing; NULL if absent. */
static const ckl_roster_entry *find(const ckl__roster_list *l, const char *token) {
  for (size_t i = 0; i < l->n; i++)
    if (!strcmp(l->v[i].token, token)) return &l->v[i];
  return NULL;
}

static ckl__roster_ident my_ident(void) {
  const ckl__host_ident *me = ckl__host_identity();
  ckl__roster_ident id = {.host_id = me->host_id, .boot_id = me->boot_id,
                          .hostname = me->hostname, .pidns = me->pidns,
                          .pid = getpid(), .tid = ckl__gettid()};
  assert_int_equal(ckl__self_start_time(&id.pid_start), 0);
  return id;
}

/* ---- basic round trip ------------------------------------------------------ */

static void test_round_trip(void **state) {
  (void)state;
  ckl__state *st = open_state();
  char tok[CKL_TOKEN_HEX_LEN + 1];
  int64_t before = ckl__now_realtime_ns();
  ckl__roster_reg reg = {.operation = "verify", .target = "vm/100/2026-01-01T00:00:00Z",
                         .lease_expiry_ns = before + 60 * SEC};
  assert_int_equal(ckl__state_register(st, &reg, tok), 0);
  assert_int_equal(strlen(tok), CKL_TOKEN_HEX_LEN);

  ckl__roster_list l;
  int reaped = -1;
  assert_int_equal(ckl__state_list(st, 0, &l, &reaped), 0);
  assert_int_equal(reaped, 0);
  assert_int_equal(l.n, 1);
  const ckl_roster_entry *e = find(&l, tok);
  assert_non_null(e);
  assert_int_equal(e->parsed, 1);
  assert_string_equal(e->note, "");
  assert_string_equal(e->operation, "verify");
  assert_string_equal(e->target, "vm/100/2026-01-01T00:00:00Z");
  assert_string_equal(e->host_id, ckl__host_identity()->host_id);
  assert_string_equal(e->boot_id, ckl__host_identity()->boot_id);
  assert_string_equal(e->hostname, ckl__hostname());
  assert_int_equal(e->pid, getpid());
  assert_int_equal(e->tid, ckl__gettid());
  uint64_t mystart;
  assert_int_equal(ckl__self_start_time(&mystart), 0);
  assert_true(mystart > 0);
  assert_int_equal(e->pid_start, mystart);
  assert_int_equal(e->flags, 0);
  assert_int_equal(e->local, 1);
  assert_true(e->start_ns >= before && e->start_ns <= ckl__now_realtime_ns());
  assert_int_equal(e->lease_expiry_ns, before + 60 * SEC);
  ckl__roster_list_free(&l);

  /* refresh moves the lease */
  assert_int_equal(ckl__state_refresh(st, tok, before + 120 * SEC), 0);
  assert_int_equal(ckl__state_list(st, 0, &l, NULL), 0);
  assert_int_equal(find(&l, tok)->lease_expiry_ns, before + 120 * SEC);
  ckl__roster_list_free(&l);

  /* "backup" is always a writer */
  char btok[CKL_TOKEN_HEX_LEN + 1];
  ckl__roster_reg breg = {.operation = "backup", .target = "vm/100",
                          .flags = CKL_ROSTER_EXCLUSIVE};
  assert_int_equal(ckl__state_register(st, &breg, btok), 0);
  assert_int_equal(ckl__state_list(st, 0, &l, NULL), 0);
  assert_int_equal(l.n, 2);
  assert_int_equal(find(&l, btok)->flags, CKL_ROSTER_WRITER | CKL_ROSTER_EXCLUSIVE);
  ckl__roster_list_free(&l);

  assert_int_equal(ckl__state_deregister(st, tok), 0);
  assert_int_equal(ckl__state_deregister(st, tok), -ENOENT);
  assert_int_equal(ckl__state_refresh(st, tok, before + 180 * SEC), -ENOENT);
  assert_int_equal(ckl__state_deregister(st, btok), 0);
  assert_int_equal(ckl__state_list(st, 0, &l, NULL), 0);
  assert_int_equal(l.n, 0);
  ckl__roster_list_free(&l);

  /* argument errors, before any I/O */
  assert_int_equal(ckl__state_deregister(st, "xyz"), -EINVAL);
  assert_int_equal(ckl__state_refresh(st, "ABCDEF0123456789abcdef0123456789", 1), -EINVAL);
  ckl__roster_reg bad = {.operation = NULL};
  assert_int_equal(ckl__state_register(st, &bad, tok), -EINVAL);
  bad.operation = "";
  assert_int_equal(ckl__state_register(st, &bad, tok), -EINVAL);
  bad.operation = "an-operation-name-of-32-bytes-xx";
  assert_int_equal(ckl__state_register(st, &bad, tok), -ENAMETOOLONG);
  bad.operation = "read";
  bad.flags = 0x100;
  assert_int_equal(ckl__state_register(st, &bad, tok), -EINVAL);
  bad.flags = 0;
  bad.target = "line\nbreak";
  assert_int_equal(ckl__state_register(st, &bad, tok), -EINVAL);
  ckl__state_close(st);
}

/* Two handles of one store in one process are one environment. */
static void test_two_handles_share(void **state) {
  (void)state;
  ckl__state *a = open_state(), *b = open_state();
  char tok[CKL_TOKEN_HEX_LEN + 1];
  ckl__roster_reg reg = {.operation = "read"};
  assert_int_equal(ckl__state_register(a, &reg, tok), 0);
  ckl__state_close(a); /* closing one never affects the other */
  assert_int_equal(ckl__state_refresh(b, tok, 5), 0);
  assert_int_equal(ckl__state_deregister(b, tok), 0);
  ckl__state_close(b);
  ckl__state_close(NULL);
}

/* ---- processes ------------------------------------------------------------- */

struct child_arg {
  char fpdir[512];
  char parent_token[CKL_TOKEN_HEX_LEN + 1];
  char token[CKL_TOKEN_HEX_LEN + 1]; /* written by the child (shared memory) */
  int64_t start_ns;
  int deregister; /* deregister after the pause */
};

/* Register, publish the token, pause at state.roster.after_register until
 * the parent lets go, then (optionally) deregister. Exit codes say which
 * step failed. */
static int registering_child(void *p) {
  struct child_arg *a = p;
  ckl__state *st;
  if (ckl__state_open(store, &st) != 0) return 10;
  if (a->parent_token[0]) {
    ckl__roster_list l;
    if (ckl__state_list(st, 0, &l, NULL) != 0) return 11;
    int seen = find(&l, a->parent_token) != NULL;
    ckl__roster_list_free(&l);
    if (!seen) return 12; /* the child must see the parent's record */
  }
  char spec[600];
  snprintf(spec, sizeof spec, "pausefile(%s)", a->fpdir);
  if (ckl_failpoint_arm("state.roster.after_register", spec) != 0) return 14;
  ckl__roster_reg reg = {.operation = "backup", .target = "vm/7"};
  /* The token is written into shared memory by register_txn before the
   * commit; the pause comes after the commit. */
  if (ckl__state_register(st, &reg, a->token) != 0) return 15;
  if (a->deregister && ckl__state_deregister(st, a->token) != 0) return 16;
  ckl__state_close(st);
  return 0;
}

static pid_t start_child(struct child_arg *a, const char *tag) {
  char *dir = ckl_test_mkdtemp(tag);
  snprintf(a->fpdir, sizeof a->fpdir, "%s", dir);
  free(dir);
  pid_t pid = ckl_test_fork(registering_child, a);
  char hit[256];
  snprintf(hit, sizeof hit, "state.roster.after_register.hit.%d", (int)pid);
  ckl_test_wait_file(a->fpdir, hit); /* the child is registered and paused */
  return pid;
}

static void release_child(struct child_arg *a) {
  ckl_test_release_pausefile(a->fpdir, "state.roster.after_register");
}

static void test_two_processes_see_each_other(void **state) {
  (void)state;
  ckl__state *st = open_state();
  struct child_arg *a = ckl_test_shared_alloc(sizeof *a);
  ckl__roster_reg reg = {.operation = "gc"};
  assert_int_equal(ckl__state_register(st, &reg, a->parent_token), 0);
  a->deregister = 1;
  pid_t pid = start_child(a, "fp-see");

  ckl__roster_list l;
  assert_int_equal(ckl__state_list(st, 0, &l, NULL), 0);
  assert_int_equal(l.n, 2);
  const ckl_roster_entry *e = find(&l, a->token);
  assert_non_null(e);
  assert_int_equal(e->pid, pid);
  assert_int_equal(e->local, 1);
  assert_string_equal(e->operation, "backup");
  assert_int_equal(e->flags, CKL_ROSTER_WRITER);
  ckl__roster_list_free(&l);

  release_child(a);
  assert_int_equal(ckl_test_wait(pid), 0);
  assert_int_equal(ckl__state_list(st, 0, &l, NULL), 0);
  assert_int_equal(l.n, 1);
  assert_non_null(find(&l, a->parent_token));
  ckl__roster_list_free(&l);
  assert_int_equal(ckl__state_deregister(st, a->parent_token), 0);
  ckl__state_close(st);
  ckl_test_rmtree(a->fpdir);
  ckl_test_shared_free(a, sizeof *a);
}

/* A child killed while registered (no deregister): its record is reaped
 * by the next listing; same for one that only became a zombie. */
static void killed_child_case(int zombie) {
  ckl__state *st = open_state();
  struct child_arg *a = ckl_test_shared_alloc(sizeof *a);
  pid_t pid = start_child(a, "fp-kill");
  ckl__roster_list l;
  assert_int_equal(ckl__state_list(st, 0, &l, NULL), 0);
  assert_non_null(find(&l, a->token)); /* alive: kept */
  ckl__roster_list_free(&l);
  int64_t oldest = 0;
  assert_int_equal(ckl__state_oldest_writer(st, 0, &oldest), 0);
  assert_true(oldest > 0 && oldest < INT64_MAX); /* the child's backup counts */
  int writers = -1;
  assert_int_equal(ckl__state_writers_live(st, 0, &writers), 0);
  assert_int_equal(writers, 1);

  assert_int_equal(kill(pid, SIGKILL), 0);
  if (zombie) {
    siginfo_t si;
    assert_int_equal(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT), 0);
    char stt = 0;
    uint64_t start;
    assert_int_equal(ckl__pid_stat(pid, &stt, &start), 0);
    assert_int_equal(stt, 'Z'); /* still in /proc, as a zombie */
  } else {
    assert_int_equal(ckl_test_wait(pid), 128 + SIGKILL);
  }
  /* a dead holder's record no longer counts, and is left for the reaper */
  assert_int_equal(ckl__state_writers_live(st, 0, &writers), 0);
  assert_int_equal(writers, 0);
  int reaped = -1;
  assert_int_equal(ckl__state_list(st, 0, &l, &reaped), 0);
  assert_int_equal(reaped, 1);
  assert_null(find(&l, a->token));
  assert_int_equal(l.n, 0);
  ckl__roster_list_free(&l);
  assert_int_equal(ckl__state_oldest_writer(st, 0, &oldest), 0);
  assert_int_equal(oldest, INT64_MAX);
  if (zombie) assert_int_equal(ckl_test_wait(pid), 128 + SIGKILL);
  ckl__state_close(st);
  ckl_test_rmtree(a->fpdir);
  ckl_test_shared_free(a, sizeof *a);
}

static void test_killed_child_reaped(void **state) {
  (void)state;
  killed_child_case(0);
}

static void test_zombie_child_reaped(void **state) {
  (void)state;
  killed_child_case(1);
}

static int exit_at_once(void *arg) {
  (void)arg;
  return 0;
}

/* Same host, boot and pid namespace: a pid whose start time differs was
 * reused (stale); a pid that no longer exists is stale; our own pid with
 * our own start time is live. */
static void test_pid_reuse_and_dead_pid(void **state) {
  (void)state;
  ckl__state *st = open_state();
  ckl__roster_ident id = my_ident();
  ckl__roster_reg reg = {.operation = "read", .target = "t"};
  char live[33], reused[33], dead[33], nostart[33], nostart_dead[33];
  assert_int_equal(ckl__state_register_as(st, &reg, &id, live), 0);
  /* start time unknown (0): only the pid is checked */
  uint64_t real_start = id.pid_start;
  id.pid_start = 0;
  assert_int_equal(ckl__state_register_as(st, &reg, &id, nostart), 0);
  assert_int_equal(ckl__pid_liveness(getppid(), 0), CKL__PID_UNVERIFIED);
  id.pid_start = real_start;
  id.pid_start += 1;
  assert_int_equal(ckl__state_register_as(st, &reg, &id, reused), 0);
  pid_t gone = ckl_test_fork(exit_at_once, NULL);
  assert_int_equal(ckl_test_wait(gone), 0);
  id = my_ident();
  id.pid = gone;
  assert_int_equal(ckl__state_register_as(st, &reg, &id, dead), 0);
  id.pid_start = 0;
  assert_int_equal(ckl__state_register_as(st, &reg, &id, nostart_dead), 0);

  /* holder lookup is read-only but never names a stale record */
  ckl_holder h;
  assert_int_equal(ckl__state_holder_for_target(st, "t", &h), 0);
  assert_string_equal(h.token, live);

  assert_int_equal(ckl__state_reap(st, 0), 3);
  ckl__roster_list l;
  assert_int_equal(ckl__state_list(st, 0, &l, NULL), 0);
  assert_int_equal(l.n, 2);
  assert_non_null(find(&l, live));
  assert_non_null(find(&l, nostart));
  ckl__roster_list_free(&l);
  assert_int_equal(ckl__state_reap(st, 0), 0);
  ckl__state_close(st);
}

/* Another host (or boot, or pid namespace): judged by its lease only. */
static void test_foreign_records_and_leases(void **state) {
  (void)state;
  ckl__state *st = open_state();
  int64_t now = ckl__now_realtime_ns();
  ckl__roster_ident id = my_ident();
  id.host_id = "0123456789abcdef0123456789abcdef";
  id.hostname = "elsewhere";
  id.pid = 1; /* a pid that exists here means nothing for another host */
  ckl__roster_reg reg = {.operation = "backup", .lease_expiry_ns = now + 1000 * SEC};
  char host_tok[33], boot_tok[33], ns_tok[33], nolease_tok[33];
  assert_int_equal(ckl__state_register_as(st, &reg, &id, host_tok), 0);
  ckl__roster_ident other_boot = my_ident();
  other_boot.boot_id = "00000000-0000-0000-0000-000000000000";
  reg.lease_expiry_ns = now + 3000 * SEC;
  assert_int_equal(ckl__state_register_as(st, &reg, &other_boot, boot_tok), 0);
  ckl__roster_ident other_ns = my_ident();
  other_ns.pidns += 1;
  other_ns.pid = 999999; /* would be "dead" if it were judged locally */
  reg.lease_expiry_ns = now + 1000 * SEC;
  assert_int_equal(ckl__state_register_as(st, &reg, &other_ns, ns_tok), 0);
  reg.lease_expiry_ns = 0;
  assert_int_equal(ckl__state_register_as(st, &reg, &id, nolease_tok), 0);

  ckl__roster_list l;
  int reaped = -1;
  assert_int_equal(ckl__state_list(st, now, &l, &reaped), 0);
  assert_int_equal(reaped, 0);
  assert_int_equal(l.n, 4);
  assert_int_equal(find(&l, host_tok)->local, 0);
  assert_int_equal(find(&l, boot_tok)->local, 0);
  assert_int_equal(find(&l, ns_tok)->local, 0);
  assert_string_equal(find(&l, host_tok)->hostname, "elsewhere");
  ckl__roster_list_free(&l);

  /* after the first two leases expire, before the third */
  assert_int_equal(ckl__state_list(st, now + 2000 * SEC, &l, &reaped), 0);
  assert_int_equal(reaped, 2);
  assert_int_equal(l.n, 2);
  assert_non_null(find(&l, boot_tok));
  assert_non_null(find(&l, nolease_tok));
  ckl__roster_list_free(&l);
  /* a record without a lease never expires */
  assert_int_equal(ckl__state_reap(st, INT64_MAX), 1);
  assert_int_equal(ckl__state_list(st, INT64_MAX, &l, NULL), 0);
  assert_int_equal(l.n, 1);
  assert_non_null(find(&l, nolease_tok));
  ckl__roster_list_free(&l);
  /* admin removal of a foreign record works, of a live local one does not */
  assert_int_equal(ckl__state_remove(st, nolease_tok), 0);
  assert_int_equal(ckl__state_remove(st, nolease_tok), -ENOENT);
  char mine[33];
  ckl__roster_reg r2 = {.operation = "read"};
  assert_int_equal(ckl__state_register(st, &r2, mine), 0);
  assert_int_equal(ckl__state_remove(st, mine), CKL_EBUSY);
  assert_int_equal(ckl__state_deregister(st, mine), 0);
  ckl__state_close(st);
}

/* Garbage planted with raw LMDB puts: listed as unparseable, never reaped,
 * counted as a writer from time 0. */
static void test_unparseable_records_count_as_held(void **state) {
  (void)state;
  ckl__state *st = open_state();
  const char *tok = "0123456789abcdef0123456789abcdef";
  assert_int_equal(ckl__state_raw_put(st, "roster", tok, 32, "garbage!", 8), 0);
  assert_int_equal(ckl__state_raw_put(st, "roster", "not-a-token", 11, "x", 1), 0);
  /* a well-formed record of a future version */
  unsigned char rec[CKL__ROSTER_REC_MAX];
  ckl__roster_view v = {.pid = 1, .str = {"h", "b", "n", "op", ""}, .len = {1, 1, 1, 2, 0}};
  int n = ckl__roster_encode(&v, rec, sizeof rec);
  assert_true(n > 0);
  rec[4] = 2; /* version 2 */
  const char *tok2 = "fedcba9876543210fedcba9876543210";
  assert_int_equal(ckl__state_raw_put(st, "roster", tok2, 32, rec, (size_t)n), 0);

  ckl__roster_list l;
  int reaped = -1;
  assert_int_equal(ckl__state_list(st, INT64_MAX, &l, &reaped), 0);
  assert_int_equal(reaped, 0);
  assert_int_equal(l.n, 3);
  const ckl_roster_entry *e = find(&l, tok);
  assert_non_null(e);
  assert_int_equal(e->parsed, 0);
  assert_string_equal(e->note, "unparseable record: shorter than the record header");
  assert_string_equal(e->operation, "");
  e = find(&l, "not-a-token");
  assert_non_null(e);
  assert_int_equal(e->parsed, 0);
  assert_string_equal(e->note, "unparseable record: key is not a holder token");
  e = find(&l, tok2);
  assert_non_null(e);
  assert_int_equal(e->parsed, 0);
  assert_non_null(strstr(e->note, "unknown record version"));
  ckl__roster_list_free(&l);

  assert_int_equal(ckl__state_reap(st, INT64_MAX), 0);
  int64_t oldest = -1;
  assert_int_equal(ckl__state_oldest_writer(st, 0, &oldest), 0);
  assert_int_equal(oldest, 0);
  int writers = -1; /* each unparseable record may be a writer */
  assert_int_equal(ckl__state_writers_live(st, 0, &writers), 0);
  assert_int_equal(writers, 3);
  assert_int_equal(ckl__state_writers_live(st, 0, NULL), -EINVAL);
  assert_int_equal(ckl__state_refresh(st, tok, 1), CKL_ECORRUPT);
  assert_int_equal(ckl__state_remove(st, tok), 0);
  assert_int_equal(ckl__state_remove(st, tok2), 0);
  assert_int_equal(ckl__state_list(st, 0, &l, NULL), 0);
  assert_int_equal(l.n, 1);
  ckl__roster_list_free(&l);
  ckl__state_close(st);
}

static void test_holder_for_target(void **state) {
  (void)state;
  ckl__state *st = open_state();
  ckl_holder h;
  memset(&h, 0x5a, sizeof h);
  assert_int_equal(ckl__state_holder_for_target(st, "vm/1/T", &h), -ENOENT);
  assert_int_equal(h.known, 0);
  ckl__roster_ident id = my_ident();
  id.start_ns = 1000;
  ckl__roster_reg shared = {.operation = "verify", .target = "vm/1/T"};
  char s1[33], s2[33], x1[33];
  assert_int_equal(ckl__state_register_as(st, &shared, &id, s1), 0);
  id.start_ns = 500;
  assert_int_equal(ckl__state_register_as(st, &shared, &id, s2), 0);
  assert_int_equal(ckl__state_holder_for_target(st, "vm/1/T", &h), 0);
  assert_string_equal(h.token, s2); /* the oldest shared holder */
  id.start_ns = 2000;
  ckl__roster_reg excl = {.operation = "forget", .target = "vm/1/T",
                          .flags = CKL_ROSTER_EXCLUSIVE, .lease_expiry_ns = 77};
  assert_int_equal(ckl__state_register_as(st, &excl, &id, x1), 0);
  assert_int_equal(ckl__state_holder_for_target(st, "vm/1/T", &h), 0);
  assert_int_equal(h.known, 1);
  assert_string_equal(h.token, x1); /* exclusive wins over older shared */
  assert_string_equal(h.operation, "forget");
  assert_string_equal(h.host, ckl__hostname());
  assert_string_equal(h.target, "vm/1/T");
  assert_int_equal(h.pid, getpid());
  assert_int_equal(h.since_ns, 2000);
  assert_int_equal(h.lease_expiry_ns, 77);
  assert_int_equal(ckl__state_holder_for_target(st, "vm/1", &h), -ENOENT);
  ckl__state_close(st);
}

/* ---- codec ------------------------------------------------------------------ */

static void test_codec_bounds(void **state) {
  (void)state;
  ckl__roster_view v = {.flags = CKL_ROSTER_WRITER, .pid = 42, .tid = 43, .pid_start = 44,
                        .pidns = 45, .start_ns = 46, .lease_expiry_ns = 47,
                        .str = {"host", "boot", "name", "backup", "vm/1/é"},
                        .len = {4, 4, 4, 6, 7}};
  unsigned char buf[CKL__ROSTER_REC_MAX], copy[CKL__ROSTER_REC_MAX];
  int n = ckl__roster_encode(&v, buf, sizeof buf);
  assert_int_equal(n, 64 + 10 + 4 + 4 + 4 + 6 + 7);
  ckl__roster_view d;
  const char *why = NULL;
  assert_int_equal(ckl__roster_decode(buf, (size_t)n, &d, &why), 0);
  assert_int_equal(d.pid, 42);
  assert_int_equal(d.tid, 43);
  assert_int_equal(d.pid_start, 44);
  assert_int_equal(d.pidns, 45);
  assert_int_equal(d.start_ns, 46);
  assert_int_equal(d.lease_expiry_ns, 47);
  assert_int_equal(d.flags, CKL_ROSTER_WRITER);
  assert_int_equal(d.len[4], 7);
  assert_memory_equal(d.str[4], "vm/1/é", 7);
  /* every truncation and one trailing byte are rejected */
  for (int cut = 0; cut < n; cut++) {
    memcpy(copy, buf, (size_t)cut);
    assert_int_equal(ckl__roster_decode(copy, (size_t)cut, &d, &why), CKL_ECORRUPT);
  }
  memcpy(copy, buf, (size_t)n);
  copy[n] = 0;
  assert_int_equal(ckl__roster_decode(copy, (size_t)n + 1, &d, &why), CKL_ECORRUPT);
  assert_string_equal(why, "trailing bytes");
  /* a string length pointing past the end */
  memcpy(copy, buf, (size_t)n);
  copy[64] = 0xff;
  copy[65] = 0xff;
  assert_int_equal(ckl__roster_decode(copy, (size_t)n, &d, &why), CKL_ECORRUPT);
  /* version, flags, pid */
  memcpy(copy, buf, (size_t)n);
  copy[4] = 9;
  assert_int_equal(ckl__roster_decode(copy, (size_t)n, &d, &why), CKL_EVERSION);
  memcpy(copy, buf, (size_t)n);
  copy[8] = 0x80;
  assert_int_equal(ckl__roster_decode(copy, (size_t)n, &d, &why), CKL_ECORRUPT);
  memcpy(copy, buf, (size_t)n);
  memset(copy + 16, 0, 8);
  assert_int_equal(ckl__roster_decode(copy, (size_t)n, &d, &why), CKL_ECORRUPT);
  assert_int_equal(ckl__roster_decode(NULL, 0, &d, NULL), CKL_ECORRUPT);
  /* random mutations never crash (ASan watches) and never over-read */
  srand(12345);
  for (int i = 0; i < 20000; i++) {
    size_t len = (size_t)n;
    memcpy(copy, buf, len);
    int flips = 1 + rand() % 4;
    for (int f = 0; f < flips; f++) copy[rand() % n] = (unsigned char)rand();
    if (rand() % 4 == 0) len = (size_t)(rand() % (n + 1));
    unsigned char *heap = malloc(len ? len : 1);
    memcpy(heap, copy, len);
    int rc = ckl__roster_decode(heap, len, &d, &why);
    assert_true(rc == 0 || rc == CKL_ECORRUPT || rc == CKL_EVERSION);
    if (rc == 0) {
      for (int s = 0; s < 5; s++)
        assert_true(d.str[s] >= (char *)heap && d.str[s] + d.len[s] <= (char *)heap + len);
    }
    free(heap);
  }
  /* encoder limits */
  v.len[3] = 32;
  v.str[3] = "0123456789012345678901234567890123";
  assert_int_equal(ckl__roster_encode(&v, buf, sizeof buf), -ENAMETOOLONG);
  v.str[3] = "back\x01p";
  v.len[3] = 6;
  assert_int_equal(ckl__roster_encode(&v, buf, sizeof buf), -EINVAL);
  v.str[3] = "backup";
  assert_int_equal(ckl__roster_encode(&v, buf, 70), -ENAMETOOLONG);
}

/* ---- /proc parsing ---------------------------------------------------------- */

static void test_proc_stat_parse(void **state) {
  (void)state;
  char st;
  uint64_t start;
  const char *ok = "123 (a) b) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 77 19 20\n";
  /* field 22 after comm "a) b" is 77: fields 4..21 are 1..18 */
  assert_int_equal(ckl__proc_stat_parse(ok, strlen(ok), &st, &start), 0);
  assert_int_equal(st, 'S');
  assert_int_equal(start, 77);
  const char *zomb = "9 () Z 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 -18 123456789";
  assert_int_equal(ckl__proc_stat_parse(zomb, strlen(zomb), &st, &start), 0);
  assert_int_equal(st, 'Z');
  assert_int_equal(start, 123456789);
  /* a comm that fakes a whole stat line: only the last ')' counts */
  const char *evil = "5 (x) R 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 999 1) S 1 2 3 "
                     "4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 42 0";
  assert_int_equal(ckl__proc_stat_parse(evil, strlen(evil), &st, &start), 0);
  assert_int_equal(start, 42);
  const char *bad[] = {"", "123 (abc", "1 (a) S", "1 (a) S 1 2 3", "1 (a)S 1 2 3 4 5 6 7 8 9",
                       "1 (a) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 x",
                       "1 (a) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 99999999999999999999999"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_equal(ckl__proc_stat_parse(bad[i], strlen(bad[i]), &st, &start), CKL_ECORRUPT);
  /* bounded: a buffer cut mid-number parses what is inside only */
  assert_int_equal(ckl__proc_stat_parse(ok, 59, &st, &start), 0);
  assert_int_equal(start, 7);

  /* our own stat, before and after naming ourselves like an attacker */
  uint64_t before, after;
  assert_int_equal(ckl__pid_stat(getpid(), &st, &before), 0);
  char old[17] = {0};
  prctl(PR_GET_NAME, old, 0, 0, 0);
  assert_int_equal(prctl(PR_SET_NAME, "a) Z 1 (b", 0, 0, 0), 0);
  assert_int_equal(ckl__pid_stat(getpid(), &st, &after), 0);
  prctl(PR_SET_NAME, old, 0, 0, 0);
  assert_int_equal(st, 'R');
  assert_int_equal(before, after);
  assert_int_equal(ckl__pid_liveness(getpid(), before), CKL__PID_ALIVE);
  assert_int_equal(ckl__pid_liveness(getpid(), before + 1), CKL__PID_DEAD);
  assert_int_equal(ckl__pid_liveness(0, 0), CKL__PID_DEAD);
  assert_int_equal(ckl__pid_stat(-1, &st, &start), -EINVAL);

  const ckl__host_ident *me = ckl__host_identity();
  assert_true(me == ckl__host_identity()); /* cached */
  assert_true(strlen(me->host_id) > 0);
  assert_true(strlen(me->boot_id) == 36);
  assert_true(me->pidns != 0);
}

/* ---- threads ------------------------------------------------------------------ */

#define NTHREADS 8
#define NROUNDS 40

struct thr {
  ckl__state *st;
  int idx;
  int fails;
  char tokens[NROUNDS][CKL_TOKEN_HEX_LEN + 1];
};

static void *reg_thread(void *p) {
  struct thr *t = p;
  char name[16];
  snprintf(name, sizeof name, "roster-%d", t->idx);
  pthread_setname_np(pthread_self(), name);
  ckl__roster_reg reg = {.operation = "read", .target = name};
  for (int i = 0; i < NROUNDS; i++) {
    if (ckl__state_register(t->st, &reg, t->tokens[i]) != 0) t->fails++;
    if (i % 3 == 0 && ckl__state_refresh(t->st, t->tokens[i], i + 1) != 0) t->fails++;
    if (i % 2 == 1 && ckl__state_deregister(t->st, t->tokens[i - 1]) != 0) t->fails++;
  }
  for (int i = 0; i < NROUNDS; i++)
    if (i % 2 == 1 && ckl__state_deregister(t->st, t->tokens[i]) != 0) t->fails++;
  return NULL;
}

static void test_threads_register_concurrently(void **state) {
  (void)state;
  ckl__state *st = open_state();
  static struct thr t[NTHREADS];
  pthread_t th[NTHREADS];
  for (int i = 0; i < NTHREADS; i++) {
    memset(&t[i], 0, sizeof t[i]);
    t[i].st = st;
    t[i].idx = i;
    assert_int_equal(pthread_create(&th[i], NULL, reg_thread, &t[i]), 0);
  }
  for (int i = 0; i < NTHREADS; i++) assert_int_equal(pthread_join(th[i], NULL), 0);
  for (int i = 0; i < NTHREADS; i++) assert_int_equal(t[i].fails, 0);
  /* all tokens distinct */
  for (int i = 0; i < NTHREADS * NROUNDS; i++)
    for (int j = i + 1; j < NTHREADS * NROUNDS; j++)
      assert_string_not_equal(t[i / NROUNDS].tokens[i % NROUNDS],
                              t[j / NROUNDS].tokens[j % NROUNDS]);
  ckl__roster_list l;
  assert_int_equal(ckl__state_list(st, 0, &l, NULL), 0);
  assert_int_equal(l.n, 0);
  ckl__roster_list_free(&l);
  ckl__state_close(st);
}

/* ---- public API ----------------------------------------------------------------- */

static int count_cb(const ckl_roster_entry *e, void *arg) {
  int *n = arg;
  if (e->parsed && !strcmp(e->operation, "prune")) (*n)++;
  return 0;
}

static int stop_cb(const ckl_roster_entry *e, void *arg) {
  (void)e;
  (void)arg;
  return 7;
}

static void test_public_api(void **state) {
  (void)state;
  char *plain = ckl_test_mkdtemp("notastore");
  assert_int_equal(ckl_roster_list(plain, count_cb, NULL), CKL_ENOTSTORE);
  char *sd = ckl_test_path(plain, ".state");
  struct stat sb;
  assert_int_equal(stat(sd, &sb), -1); /* nothing littered */
  free(sd);
  ckl_test_rmtree(plain);
  free(plain);
  assert_int_equal(ckl_roster_list("/nonexistent/store", count_cb, NULL), -ENOENT);

  ckl__state *st = open_state();
  char tok[33], foreign[33];
  ckl__roster_reg reg = {.operation = "prune", .target = "vm/1"};
  assert_int_equal(ckl__state_register(st, &reg, tok), 0);
  ckl__roster_ident id = my_ident();
  id.host_id = "host:else";
  int64_t now = ckl__now_realtime_ns();
  reg.lease_expiry_ns = now + 100 * SEC;
  assert_int_equal(ckl__state_register_as(st, &reg, &id, foreign), 0);
  int n = 0;
  assert_int_equal(ckl_roster_list(store, count_cb, &n), 2);
  assert_int_equal(n, 2);
  assert_int_equal(ckl_roster_list(store, stop_cb, NULL), 7);
  assert_int_equal(ckl_roster_reap(store, 0), 0);
  assert_int_equal(ckl_roster_reap(store, now + 200 * SEC), 1); /* its lease expired */
  assert_int_equal(ckl_roster_remove(store, tok), CKL_EBUSY);
  assert_int_equal(ckl_roster_remove(store, "nope"), -EINVAL);
  assert_int_equal(ckl_roster_remove(store, foreign), -ENOENT);
  assert_int_equal(ckl_roster_list(store, NULL, NULL), 1);

  ckl_roster_gc g;
  assert_int_equal(ckl_roster_gc_state(store, &g), 0);
  assert_int_equal(g.active, 0);
  assert_string_equal(g.token, "");
  const char *gct = "00112233445566778899aabbccddeeff";
  ckl__gc_begin_info bi;
  assert_int_equal(ckl__state_gc_begin(st, gct, 0, 0, &bi), 0);
  assert_int_equal(ckl_roster_gc_state(store, &g), 0);
  assert_int_equal(g.active, 1);
  assert_string_equal(g.token, gct);
  assert_int_equal(g.phase1_start_ns, bi.phase1_start_ns);
  assert_int_equal(ckl__state_gc_end(st, gct), 0);
  assert_int_equal(ckl__state_deregister(st, tok), 0);
  ckl__state_close(st);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_two_handles_share, setup, teardown),
      cmocka_unit_test_setup_teardown(test_two_processes_see_each_other, setup, teardown),
      cmocka_unit_test_setup_teardown(test_killed_child_reaped, setup, teardown),
      cmocka_unit_test_setup_teardown(test_zombie_child_reaped, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pid_reuse_and_dead_pid, setup, teardown),
      cmocka_unit_test_setup_teardown(test_foreign_records_and_leases, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unparseable_records_count_as_held, setup, teardown),
      cmocka_unit_test_setup_teardown(test_holder_for_target, setup, teardown),
      cmocka_unit_test(test_codec_bounds),
      cmocka_unit_test(test_proc_stat_parse),
      cmocka_unit_test_setup_teardown(test_threads_register_concurrently, setup, teardown),
      cmocka_unit_test_setup_teardown(test_public_api, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

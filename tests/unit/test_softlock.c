/* Soft lock: modes, try/deadline, reentrancy, exact marker files, bad
 * input, and the lease: TTL eviction of a dead holder on another host
 * (after the TTL, never before: time is stepped with an injected clock,
 * never slept), a live holder's heartbeat keeping it, strict loss, the
 * heartbeat thread, and a break racing a heartbeat in both orders (forced
 * with failpoints). */
// ctest-labels: threads
#include "test_softlock_util.h"

#include <pthread.h>

#define TTL_MS 90000

typedef struct fx {
  char *dir;
  char *path; /* dir/lk: never created */
  char *wpath, *spath, *rpath;
  _Atomic int64_t wall_off, wall_base;
  tclock ca, cb; /* two machines */
} fx;

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  f->dir = ckl_test_mkdtemp("softlock");
  f->path = ckl_test_path(f->dir, "lk");
  f->wpath = sl_sib(f->path, ".write");
  f->spath = sl_sib(f->path, ".state");
  f->rpath = sl_sib(f->path, ".readers");
  f->ca.wall_off = &f->wall_off;
  f->cb.wall_off = &f->wall_off;
  f->ca.wall_base = &f->wall_base;
  f->cb.wall_base = &f->wall_base;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  ckl_failpoint_disarm_all();
  ckl_test_rmtree(f->dir);
  free(f->path);
  free(f->wpath);
  free(f->spath);
  free(f->rpath);
  free(f->dir);
  free(f);
  return 0;
}

static int try_take(fx *f, ckl_lock_mode mode, tclock *c, const char *host, ckl_holder *who) {
  ckl_softlock lk = {0};
  ckl_softlock_opts o = sl_opts(c, host, TTL_MS);
  o.busy_holder = who;
  int rc = ckl_softlock_acquire(&lk, f->path, mode, &o);
  if (rc == 0) assert_int_equal(ckl_softlock_release(&lk), 0);
  return rc;
}

/* ---- modes and files ------------------------------------------------------ */

static void test_shared_and_exclusive(void **state) {
  fx *f = *state;
  ckl_softlock r1 = {0}, r2 = {0};
  ckl_softlock_opts o = sl_opts(&f->ca, "node-a", TTL_MS);
  o.operation = "verify";
  assert_int_equal(ckl_softlock_acquire(&r1, f->path, CKL_LOCK_SHARED, &o), 0);
  assert_int_equal(ckl_softlock_acquire(&r2, f->path, CKL_LOCK_SHARED, &o), 0);
  assert_false(sl_exists(f->path)); /* P itself is never created */
  assert_false(sl_exists(f->wpath));
  assert_false(sl_exists(f->spath)); /* readers never need the state mutex */
  assert_int_equal(ckl_test_count_entries(f->rpath, "r."), 2);
  assert_int_equal(ckl_test_count_entries(f->rpath, NULL), 2);
  struct stat st;
  assert_int_equal(lstat(f->rpath, &st), 0);
  assert_true(S_ISDIR(st.st_mode));
  assert_int_equal(st.st_mode & 07777, 0700);

  ckl_holder me, who;
  assert_int_equal(ckl_softlock_info(&r1, &me), 0);
  assert_int_equal(lstat(me.target, &st), 0);
  assert_true(S_ISREG(st.st_mode));
  assert_int_equal(st.st_mode & 07777, 0600);
  char tok[CKL_TOKEN_HEX_LEN + 1];
  sl_token_of(me.target, tok);
  assert_string_equal(tok, me.token);

  /* A writer is refused while readers are in, names one, and leaves no
   * claim behind. */
  assert_int_equal(try_take(f, CKL_LOCK_EXCLUSIVE, &f->cb, "node-b", &who), CKL_EBUSY);
  assert_int_equal(who.known, 1);
  assert_string_equal(who.operation, "verify");
  assert_string_equal(who.host, "node-a");
  assert_int_equal(who.pid, getpid());
  assert_non_null(strstr(who.target, ".readers/r."));
  assert_false(sl_exists(f->wpath));
  assert_false(sl_exists(f->spath));
  ckl_softlock w = {0};
  ckl_softlock_opts ow = sl_opts(&f->cb, "node-b", TTL_MS);
  ow.timeout_ms = 30;
  assert_int_equal(ckl_softlock_acquire(&w, f->path, CKL_LOCK_EXCLUSIVE, &ow), CKL_ETIMEDOUT);
  assert_false(sl_exists(f->wpath));

  assert_int_equal(ckl_softlock_release(&r1), 0);
  assert_null(r1.hold);
  assert_false(sl_exists(me.target));
  assert_int_equal(try_take(f, CKL_LOCK_EXCLUSIVE, &f->cb, "node-b", NULL), CKL_EBUSY);
  assert_int_equal(ckl_softlock_release(&r2), 0);
  assert_int_equal(ckl_test_count_entries(f->rpath, NULL), 0);

  /* Exclusive: everyone else is refused and told who holds it. */
  ow.timeout_ms = CKL_TRY;
  ow.operation = "gc";
  assert_int_equal(ckl_softlock_acquire(&w, f->path, CKL_LOCK_EXCLUSIVE, &ow), 0);
  assert_int_equal(lstat(f->wpath, &st), 0);
  assert_true(S_ISREG(st.st_mode));
  assert_int_equal(st.st_mode & 07777, 0600);
  assert_false(sl_exists(f->spath)); /* the mutex is short-held */
  assert_int_equal(ckl_softlock_info(&w, &me), 0);
  assert_string_equal(me.target, f->wpath);
  for (int mode = CKL_LOCK_SHARED; mode <= CKL_LOCK_EXCLUSIVE; mode++) {
    assert_int_equal(try_take(f, (ckl_lock_mode)mode, &f->ca, "node-a", &who), CKL_EBUSY);
    assert_int_equal(who.known, 1);
    assert_string_equal(who.token, me.token);
    assert_string_equal(who.operation, "gc");
    assert_string_equal(who.host, "node-b");
    assert_string_equal(who.target, f->wpath);
    assert_int_equal(who.since_ns, me.since_ns);
  }
  assert_int_equal(ckl_test_count_entries(f->rpath, NULL), 0); /* refused readers left nothing */
  assert_int_equal(ckl_softlock_release(&w), 0);
  assert_false(sl_exists(f->wpath));
  assert_false(sl_exists(f->spath));
  assert_int_equal(ckl_test_count_entries(f->rpath, NULL), 0);
  assert_int_equal(try_take(f, CKL_LOCK_SHARED, &f->ca, "node-a", NULL), 0);
}

static void test_reentrancy(void **state) {
  fx *f = *state;
  ckl_softlock a = {0};
  ckl_softlock_opts o = sl_opts(&f->ca, "node-a", TTL_MS);
  assert_int_equal(ckl_softlock_acquire(&a, f->path, CKL_LOCK_EXCLUSIVE, &o), 0);
  assert_int_equal(ckl_softlock_acquire(&a, f->path, CKL_LOCK_EXCLUSIVE, &o), 0); /* depth 2 */
  assert_int_equal(ckl_softlock_acquire(&a, f->path, CKL_LOCK_SHARED, &o), -EDEADLK);
  char *other = ckl_test_path(f->dir, "other");
  assert_int_equal(ckl_softlock_acquire(&a, other, CKL_LOCK_EXCLUSIVE, &o), -EINVAL);
  free(other);
  /* Another struct of the same thread is another holder. */
  assert_int_equal(try_take(f, CKL_LOCK_EXCLUSIVE, &f->ca, "node-a", NULL), CKL_EBUSY);
  assert_int_equal(try_take(f, CKL_LOCK_SHARED, &f->ca, "node-a", NULL), CKL_EBUSY);
  assert_int_equal(ckl_softlock_release(&a), 0);
  assert_non_null(a.hold);
  assert_true(sl_exists(f->wpath));
  assert_int_equal(ckl_softlock_check(&a), 0);
  assert_int_equal(ckl_softlock_release(&a), 0);
  assert_null(a.hold);
  assert_false(sl_exists(f->wpath));
  assert_int_equal(ckl_softlock_release(&a), 0); /* not held: no-op */
  assert_int_equal(ckl_softlock_check(&a), -EINVAL);
  assert_int_equal(ckl_softlock_refresh(&a), -EINVAL);
  assert_int_equal(ckl_softlock_due_ns(&a), -EINVAL);

  ckl_softlock r = {0};
  assert_int_equal(ckl_softlock_acquire(&r, f->path, CKL_LOCK_SHARED, &o), 0);
  assert_int_equal(ckl_softlock_acquire(&r, f->path, CKL_LOCK_SHARED, &o), 0);
  assert_int_equal(ckl_test_count_entries(f->rpath, "r."), 1); /* counted, not a second marker */
  assert_int_equal(ckl_softlock_acquire(&r, f->path, CKL_LOCK_EXCLUSIVE, &o), -EDEADLK);
  assert_int_equal(ckl_softlock_release(&r), 0);
  assert_int_equal(ckl_test_count_entries(f->rpath, "r."), 1);
  assert_int_equal(ckl_softlock_release(&r), 0);
  assert_int_equal(ckl_test_count_entries(f->rpath, "r."), 0);
}

static void test_bad_arguments(void **state) {
  fx *f = *state;
  ckl_softlock lk = {0};
  ckl_softlock_opts o = sl_opts(&f->ca, "node-a", TTL_MS);
  assert_int_equal(ckl_softlock_acquire(NULL, f->path, CKL_LOCK_SHARED, &o), -EINVAL);
  assert_int_equal(ckl_softlock_acquire(&lk, NULL, CKL_LOCK_SHARED, &o), -EINVAL);
  assert_int_equal(ckl_softlock_acquire(&lk, "", CKL_LOCK_SHARED, &o), -EINVAL);
  assert_int_equal(ckl_softlock_acquire(&lk, f->path, (ckl_lock_mode)3, &o), -EINVAL);
  char *slash = sl_sib(f->dir, "/");
  assert_int_equal(ckl_softlock_acquire(&lk, slash, CKL_LOCK_SHARED, &o), -EINVAL);
  free(slash);
  char *dot = sl_sib(f->dir, "/..");
  assert_int_equal(ckl_softlock_acquire(&lk, dot, CKL_LOCK_SHARED, &o), -EINVAL);
  free(dot);
  ckl_softlock_opts bad = o;
  bad.timeout_ms = -2;
  assert_int_equal(ckl_softlock_acquire(&lk, f->path, CKL_LOCK_SHARED, &bad), -EINVAL);
  bad = o;
  bad.ttl_ms = 29;
  assert_int_equal(ckl_softlock_acquire(&lk, f->path, CKL_LOCK_SHARED, &bad), -EINVAL);
  bad = o;
  bad.ttl_ms = 300;
  bad.heartbeat_ms = 101;
  assert_int_equal(ckl_softlock_acquire(&lk, f->path, CKL_LOCK_SHARED, &bad), -EINVAL);
  bad = o;
  bad.host_id = "two words";
  assert_int_equal(ckl_softlock_acquire(&lk, f->path, CKL_LOCK_SHARED, &bad), -EINVAL);
  bad.host_id = "h\xc3\xa9";
  assert_int_equal(ckl_softlock_acquire(&lk, f->path, CKL_LOCK_SHARED, &bad), -EINVAL);
  bad = o;
  bad.heartbeat = (ckl_softlock_heartbeat)7;
  assert_int_equal(ckl_softlock_acquire(&lk, f->path, CKL_LOCK_SHARED, &bad), -EINVAL);
  char *missing = ckl_test_path(f->dir, "no/such/lk");
  assert_int_equal(ckl_softlock_acquire(&lk, missing, CKL_LOCK_SHARED, &o), -ENOENT);
  free(missing);
  char longname[300];
  memset(longname, 'x', 250);
  longname[250] = '\0';
  char *lng = ckl_test_path(f->dir, longname);
  assert_int_equal(ckl_softlock_acquire(&lk, lng, CKL_LOCK_SHARED, &o), -ENAMETOOLONG);
  free(lng);
  assert_null(lk.hold);
  assert_int_equal(ckl_test_count_entries(f->dir, NULL), 0); /* nothing made by refusals */
  assert_int_equal(ckl_softlock_info(&lk, NULL), -EINVAL);
}

/* ---- TTL eviction with a stepped clock -------------------------------------- */

static atomic_int lost_calls, lost_reason;
static void on_lost(void *ctx, ckl_softlock_lost why) {
  (void)ctx;
  atomic_fetch_add(&lost_calls, 1);
  atomic_store(&lost_reason, (int)why);
}

static void test_dead_other_host_evicted_after_ttl_never_before(void **state) {
  fx *f = *state;
  /* 50 ms on either side of the TTL: with real time running, a stall of
   * 50 ms between node-b's stamp and node-a's second look (a scheduler
   * tick on a loaded machine) would make "never before" fail. */
  sl_freeze_wall(&f->wall_base);
  for (int mode = CKL_LOCK_SHARED; mode <= CKL_LOCK_EXCLUSIVE; mode++) {
    atomic_store(&f->wall_off, 0);
    atomic_store(&lost_calls, 0);
    /* node-b takes the lock and then "dies": it never refreshes again. */
    ckl_softlock dead = {0};
    ckl_softlock_opts ob = sl_opts(&f->cb, "node-b", TTL_MS);
    ob.on_lost = on_lost;
    assert_int_equal(ckl_softlock_acquire(&dead, f->path, (ckl_lock_mode)mode, &ob), 0);
    ckl_holder me;
    assert_int_equal(ckl_softlock_info(&dead, &me), 0);
    /* node-a wants it exclusively: busy until the marker is a TTL old. */
    ckl_holder who;
    assert_int_equal(try_take(f, CKL_LOCK_EXCLUSIVE, &f->ca, "node-a", &who), CKL_EBUSY);
    assert_string_equal(who.token, me.token);
    atomic_store(&f->wall_off, (STALE_MS(TTL_MS) - 50) * MS);
    assert_int_equal(try_take(f, CKL_LOCK_EXCLUSIVE, &f->ca, "node-a", &who), CKL_EBUSY);
    assert_string_equal(who.token, me.token);
    assert_true(sl_exists(me.target));
    atomic_store(&f->wall_off, (STALE_MS(TTL_MS) + 50) * MS);
    ckl_softlock a = {0};
    ckl_softlock_opts oa = sl_opts(&f->ca, "node-a", TTL_MS);
    assert_int_equal(ckl_softlock_acquire(&a, f->path, CKL_LOCK_EXCLUSIVE, &oa), 0);
    assert_false(mode == CKL_LOCK_SHARED && sl_exists(me.target));
    ckl_holder mine;
    assert_int_equal(ckl_softlock_info(&a, &mine), 0);
    char tok[CKL_TOKEN_HEX_LEN + 1];
    sl_token_of(f->wpath, tok);
    assert_string_equal(tok, mine.token);
    assert_int_equal(ckl_test_count_entries(f->rpath, NULL), 0); /* no break leftovers */
    /* The evicted holder learns it at its next heartbeat (its boot clock
     * did not move: the marker is gone, not expired), and its release
     * leaves the new owner's marker alone. */
    assert_int_equal(ckl_softlock_check(&dead), 0);
    assert_int_equal(ckl_softlock_refresh(&dead), CKL_ELOCKLOST);
    assert_int_equal(atomic_load(&lost_calls), 1);
    assert_int_equal(atomic_load(&lost_reason),
                     mode == CKL_LOCK_SHARED ? CKL_SOFTLOCK_LOST_GONE : CKL_SOFTLOCK_LOST_REOWNED);
    assert_int_equal(ckl_softlock_check(&dead), CKL_ELOCKLOST);
    assert_int_equal(ckl_softlock_refresh(&dead), CKL_ELOCKLOST);
    assert_int_equal(atomic_load(&lost_calls), 1); /* once */
    assert_int_equal(ckl_softlock_release(&dead), CKL_ELOCKLOST);
    sl_token_of(f->wpath, tok);
    assert_string_equal(tok, mine.token);
    assert_int_equal(ckl_softlock_release(&a), 0);
    assert_false(sl_exists(f->wpath));
  }
}

static void test_heartbeat_keeps_live_holder(void **state) {
  fx *f = *state;
  ckl_softlock b = {0};
  ckl_softlock_opts ob = sl_opts(&f->cb, "node-b", TTL_MS);
  assert_int_equal(ckl_softlock_acquire(&b, f->path, CKL_LOCK_EXCLUSIVE, &ob), 0);
  int64_t due = ckl_softlock_due_ns(&b);
  int64_t now = tclock_fn(CKL_SOFTLOCK_CLOCK_BOOT, &f->cb);
  assert_true(due > now && due <= now + (TTL_MS / 3) * MS);
  assert_true(ckl_softlock_due_in_ms(&b) <= TTL_MS / 3);
  /* Four heartbeats, each 50 s of everyone's time apart: 200 s in all,
   * more than two TTLs, and node-a never gets in. */
  for (int i = 1; i <= 4; i++) {
    atomic_store(&f->wall_off, i * 50 * SEC);
    atomic_store(&f->cb.boot_off, i * 50 * SEC);
    assert_int_equal(ckl_softlock_due_in_ms(&b), 0); /* overdue */
    assert_int_equal(ckl_softlock_refresh(&b), 0);
    struct stat st;
    assert_int_equal(lstat(f->wpath, &st), 0);
    int64_t m = st.st_mtim.tv_sec * SEC + st.st_mtim.tv_nsec;
    int64_t wall = tclock_fn(CKL_SOFTLOCK_CLOCK_WALL, &f->ca);
    assert_true(m <= wall && m > wall - 10 * SEC); /* stamped with the cluster's time */
    assert_int_equal(try_take(f, CKL_LOCK_SHARED, &f->ca, "node-a", NULL), CKL_EBUSY);
    assert_int_equal(ckl_softlock_check(&b), 0);
  }
  /* It stops: a TTL later node-a evicts it. */
  atomic_store(&f->wall_off, 200 * SEC + (STALE_MS(TTL_MS) + 1000) * MS);
  assert_int_equal(try_take(f, CKL_LOCK_SHARED, &f->ca, "node-a", NULL), 0);
  assert_int_equal(ckl_softlock_refresh(&b), CKL_ELOCKLOST);
  assert_int_equal(ckl_softlock_release(&b), CKL_ELOCKLOST);
}

static void test_strict_lease_expiry(void **state) {
  fx *f = *state;
  atomic_store(&lost_calls, 0);
  ckl_softlock b = {0};
  ckl_softlock_opts ob = sl_opts(&f->cb, "node-b", TTL_MS);
  ob.on_lost = on_lost;
  /* 59 s against a 60 s lease: real time must not add the missing second
   * (the boot clock is the holder's own; the cluster's may run). */
  sl_freeze_boot(&f->cb);
  assert_int_equal(ckl_softlock_acquire(&b, f->path, CKL_LOCK_EXCLUSIVE, &ob), 0);
  /* A refresh that fails is not yet a loss: the lease still runs. */
  assert_int_equal(ckl_failpoint_arm("softlock.heartbeat.before_touch", "error(EIO)"), 0);
  assert_int_equal(ckl_softlock_refresh(&b), -EIO);
  assert_int_equal(ckl_softlock_check(&b), 0);
  assert_true(ckl_softlock_due_in_ms(&b) <= TTL_MS / 3 / 4); /* retried sooner */
  /* The lease is TTL - interval (60 s) on the holder's boot clock. */
  atomic_store(&f->cb.boot_off, 59 * SEC);
  assert_int_equal(ckl_softlock_check(&b), 0);
  assert_int_equal(ckl_softlock_refresh(&b), -EIO);
  struct stat before, after;
  assert_int_equal(lstat(f->wpath, &before), 0);
  atomic_store(&f->cb.boot_off, 61 * SEC);
  assert_int_equal(ckl_failpoint_disarm("softlock.heartbeat.before_touch"), 0);
  assert_int_equal(ckl_softlock_check(&b), CKL_ELOCKLOST); /* noticed without I/O */
  assert_int_equal(atomic_load(&lost_calls), 1);
  assert_int_equal(atomic_load(&lost_reason), CKL_SOFTLOCK_LOST_EXPIRED);
  /* Never revived: refresh refuses and does not stamp. */
  assert_int_equal(ckl_softlock_refresh(&b), CKL_ELOCKLOST);
  assert_int_equal(lstat(f->wpath, &after), 0);
  assert_true(before.st_mtim.tv_sec == after.st_mtim.tv_sec &&
              before.st_mtim.tv_nsec == after.st_mtim.tv_nsec);
  assert_int_equal(atomic_load(&lost_calls), 1);
  assert_int_equal(ckl_softlock_acquire(&b, f->path, CKL_LOCK_EXCLUSIVE, &ob), CKL_ELOCKLOST);
  /* Release reports it and leaves the marker to age out. */
  assert_int_equal(ckl_softlock_release(&b), CKL_ELOCKLOST);
  assert_true(sl_exists(f->wpath));
  assert_int_equal(try_take(f, CKL_LOCK_SHARED, &f->ca, "node-a", NULL), CKL_EBUSY);
  atomic_store(&f->wall_off, (STALE_MS(TTL_MS) + 1000) * MS);
  assert_int_equal(try_take(f, CKL_LOCK_SHARED, &f->ca, "node-a", NULL), 0);
  assert_false(sl_exists(f->wpath));
}

static void test_heartbeat_thread(void **state) {
  fx *f = *state;
  atomic_store(&lost_calls, 0);
  assert_int_equal(ckl_failpoint_arm("softlock.heartbeat.after_touch", "count"), 0);
  ckl_softlock r = {0};
  /* A long TTL and a short beat: a slow (sanitized, loaded) machine can
   * delay a beat a lot without the lease running out. */
  ckl_softlock_opts o = {.timeout_ms = CKL_TRY, .ttl_ms = 30000, .heartbeat_ms = 20,
                         .on_lost = on_lost};
  assert_int_equal(ckl_softlock_acquire(&r, f->path, CKL_LOCK_SHARED, &o), 0);
  ckl_holder me;
  assert_int_equal(ckl_softlock_info(&r, &me), 0);
  struct stat st0, st1;
  assert_int_equal(lstat(me.target, &st0), 0);
  /* Wait for a beat that stamped AFTER st0 was read. The thread may have
   * beaten any number of times already (this thread can be descheduled
   * for 60 ms after the acquire), and a beat counts its hit after its
   * stamp: the first hit after this reading may belong to a stamp from
   * before st0, the second cannot. */
  uint64_t h = ckl_failpoint_hits("softlock.heartbeat.after_touch");
  assert_int_equal(
      ckl_failpoint_wait_hits("softlock.heartbeat.after_touch", h + 2, CKL_TEST_WAIT_MS), 0);
  assert_int_equal(ckl_softlock_check(&r), 0);
  assert_int_equal(lstat(me.target, &st1), 0);
  assert_true(st1.st_mtim.tv_sec > st0.st_mtim.tv_sec ||
              (st1.st_mtim.tv_sec == st0.st_mtim.tv_sec &&
               st1.st_mtim.tv_nsec > st0.st_mtim.tv_nsec));
  /* Remove the marker behind its back: the thread's next beat finds it
   * gone and tells the holder through the callback. */
  assert_int_equal(unlink(me.target), 0);
  for (int i = 0; i < CKL_TEST_WAIT_MS && atomic_load(&lost_calls) == 0; i++) ckl__sleep_ms(1);
  assert_int_equal(atomic_load(&lost_calls), 1);
  assert_int_equal(atomic_load(&lost_reason), CKL_SOFTLOCK_LOST_GONE);
  assert_int_equal(ckl_softlock_check(&r), CKL_ELOCKLOST);
  assert_int_equal(ckl_softlock_release(&r), CKL_ELOCKLOST);
  assert_int_equal(ckl_test_count_entries(f->rpath, NULL), 0);
}

/* ---- a break racing a heartbeat ---------------------------------------------- */

typedef struct taker {
  fx *f;
  ckl_softlock lk;
  int rc;
} taker;

static void *take_main(void *arg) {
  taker *t = arg;
  ckl_softlock_opts o = sl_opts(&t->f->ca, "node-a", TTL_MS);
  t->rc = ckl_softlock_acquire(&t->lk, t->f->path, CKL_LOCK_EXCLUSIVE, &o);
  return NULL;
}

/* node-b holds P.write; its boot clock says its lease is fine, but the
 * cluster's time has moved a TTL on, so node-a judges the marker stale (a
 * stalled holder, as after a suspend with skewed clocks). */
static void start_race(fx *f, ckl_softlock *b, const char *fp, taker *t, pthread_t *th) {
  ckl_softlock_opts ob = sl_opts(&f->cb, "node-b", TTL_MS);
  assert_int_equal(ckl_softlock_acquire(b, f->path, CKL_LOCK_EXCLUSIVE, &ob), 0);
  atomic_store(&f->wall_off, (STALE_MS(TTL_MS) + 1000) * MS);
  assert_int_equal(ckl_failpoint_arm(fp, "1*pause"), 0);
  t->f = f;
  memset(&t->lk, 0, sizeof t->lk);
  assert_int_equal(pthread_create(th, NULL, take_main, t), 0);
  assert_int_equal(ckl_failpoint_wait_hits(fp, 1, CKL_TEST_WAIT_MS), 0);
}

static void test_heartbeat_during_break_loses(void **state) {
  fx *f = *state;
  ckl_softlock b = {0};
  taker t;
  pthread_t th;
  start_race(f, &b, "softlock.break.after_rename", &t, &th);
  /* The marker is aside (b.<token>): the heartbeat finds its name gone. */
  assert_false(sl_exists(f->wpath));
  assert_int_equal(ckl_test_count_entries(f->rpath, "b."), 1);
  assert_int_equal(ckl_softlock_refresh(&b), CKL_ELOCKLOST);
  assert_int_equal(ckl_failpoint_release("softlock.break.after_rename"), 1);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_int_equal(t.rc, 0);
  /* Exactly one owner: node-a's marker, node-b told it lost. */
  ckl_holder mine;
  assert_int_equal(ckl_softlock_info(&t.lk, &mine), 0);
  char tok[CKL_TOKEN_HEX_LEN + 1];
  sl_token_of(f->wpath, tok);
  assert_string_equal(tok, mine.token);
  assert_int_equal(ckl_softlock_check(&b), CKL_ELOCKLOST);
  assert_int_equal(ckl_softlock_check(&t.lk), 0);
  assert_int_equal(ckl_test_count_entries(f->rpath, NULL), 0);
  assert_int_equal(ckl_softlock_release(&b), CKL_ELOCKLOST);
  sl_token_of(f->wpath, tok);
  assert_string_equal(tok, mine.token);
  assert_int_equal(ckl_softlock_release(&t.lk), 0);
}

static void test_heartbeat_before_break_keeps(void **state) {
  fx *f = *state;
  ckl_softlock b = {0};
  taker t;
  pthread_t th;
  /* node-a has judged the marker stale and is about to rename it; node-b's
   * heartbeat stamps it first. The evictor must notice and put it back. */
  start_race(f, &b, "softlock.break.before_rename", &t, &th);
  assert_int_equal(ckl_softlock_refresh(&b), 0);
  ckl_holder hb;
  assert_int_equal(ckl_softlock_info(&b, &hb), 0);
  assert_int_equal(ckl_failpoint_arm("softlock.break.after_rename", "count"), 0);
  assert_int_equal(ckl_failpoint_release("softlock.break.before_rename"), 1);
  /* node-a (a TRY) keeps seeing a live writer and gives up. */
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_int_equal(t.rc, CKL_EBUSY);
  assert_int_equal(ckl_failpoint_hits("softlock.break.after_rename"), 1); /* it did move it */
  char tok[CKL_TOKEN_HEX_LEN + 1];
  sl_token_of(f->wpath, tok);
  assert_string_equal(tok, hb.token);
  assert_int_equal(ckl_test_count_entries(f->rpath, NULL), 0);
  assert_int_equal(ckl_softlock_refresh(&b), 0); /* same inode: still ours */
  assert_int_equal(ckl_softlock_check(&b), 0);
  assert_int_equal(ckl_softlock_release(&b), 0);
  assert_false(sl_exists(f->wpath));
}

/* ---- writer preference, failpoint errors ---------------------------------------- */

typedef struct wtaker {
  fx *f;
  ckl_softlock lk;
  int rc;
} wtaker;

static void *writer_main(void *arg) {
  wtaker *w = arg;
  ckl_softlock_opts o = sl_opts(&w->f->cb, "node-b", TTL_MS);
  o.timeout_ms = CKL_TEST_NEVER_MS; /* the reader below leaves when told */
  o.operation = "prune";
  w->rc = ckl_softlock_acquire(&w->lk, w->f->path, CKL_LOCK_EXCLUSIVE, &o);
  return NULL;
}

static void test_waiting_writer_blocks_new_readers(void **state) {
  fx *f = *state;
  ckl_softlock r = {0};
  ckl_softlock_opts o = sl_opts(&f->ca, "node-a", TTL_MS);
  assert_int_equal(ckl_softlock_acquire(&r, f->path, CKL_LOCK_SHARED, &o), 0);
  assert_int_equal(ckl_failpoint_arm("softlock.writer.before_scan", "count"), 0);
  wtaker w = {.f = f};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, writer_main, &w), 0);
  /* Phase 1 done once the writer scans for readers. */
  assert_int_equal(ckl_failpoint_wait_hits("softlock.writer.before_scan", 2, CKL_TEST_WAIT_MS), 0);
  ckl_holder who;
  assert_int_equal(try_take(f, CKL_LOCK_SHARED, &f->ca, "node-a", &who), CKL_EBUSY);
  assert_int_equal(who.known, 1);
  assert_string_equal(who.operation, "prune");
  assert_int_equal(ckl_test_count_entries(f->rpath, "r."), 1); /* only the old reader */
  assert_int_equal(ckl_softlock_release(&r), 0);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_int_equal(w.rc, 0);
  assert_int_equal(ckl_test_count_entries(f->rpath, NULL), 0);
  assert_int_equal(ckl_softlock_release(&w.lk), 0);
}

static void test_failpoint_errors_leave_nothing(void **state) {
  fx *f = *state;
  static const struct {
    const char *fp;
    ckl_lock_mode mode;
  } cases[] = {{"softlock.writer.after_claim", CKL_LOCK_EXCLUSIVE},
               {"softlock.writer.before_claim", CKL_LOCK_EXCLUSIVE},
               {"softlock.mutex.after_create", CKL_LOCK_EXCLUSIVE},
               {"softlock.writer.before_scan", CKL_LOCK_EXCLUSIVE},
               {"softlock.reader.after_create", CKL_LOCK_SHARED},
               {"softlock.reader.after_check", CKL_LOCK_SHARED}};
  for (size_t i = 0; i < CKL__ARRAY_SIZE(cases); i++) {
    assert_int_equal(ckl_failpoint_arm(cases[i].fp, "error(EIO)"), 0);
    assert_int_equal(try_take(f, cases[i].mode, &f->ca, "node-a", NULL), -EIO);
    assert_int_equal(ckl_failpoint_disarm(cases[i].fp), 0);
    assert_false(sl_exists(f->wpath));
    assert_false(sl_exists(f->spath));
    assert_int_equal(ckl_test_count_entries(f->rpath, NULL), 0);
  }
  /* A release that dies before removing leaves the marker, exactly like a
   * crash; it is stale a TTL later. */
  assert_int_equal(ckl_failpoint_arm("softlock.release.before_remove", "1*error(EIO)"), 0);
  assert_int_equal(try_take(f, CKL_LOCK_EXCLUSIVE, &f->ca, "node-a", NULL), 0);
  assert_true(sl_exists(f->wpath));
  assert_int_equal(try_take(f, CKL_LOCK_SHARED, &f->cb, "node-b", NULL), CKL_EBUSY);
  atomic_store(&f->wall_off, (STALE_MS(TTL_MS) + 1) * MS);
  assert_int_equal(try_take(f, CKL_LOCK_SHARED, &f->cb, "node-b", NULL), 0);
  assert_false(sl_exists(f->wpath));
}

static void test_break_leftover_swept(void **state) {
  fx *f = *state;
  /* A writer marker whose holder died long ago (mtime a TTL back); the
   * evictor "crashes" right after moving it aside. */
  assert_int_equal(ckl_failpoint_arm("softlock.release.before_remove", "1*error(EIO)"), 0);
  assert_int_equal(try_take(f, CKL_LOCK_EXCLUSIVE, &f->cb, "node-b", NULL), 0);
  int64_t old = ckl__now_realtime_ns() - (STALE_MS(TTL_MS) + 1000) * MS;
  struct timespec ts[2] = {{.tv_sec = old / SEC, .tv_nsec = old % SEC}};
  ts[1] = ts[0];
  assert_int_equal(utimensat(AT_FDCWD, f->wpath, ts, AT_SYMLINK_NOFOLLOW), 0);
  assert_int_equal(ckl_failpoint_arm("softlock.break.after_rename", "1*error(EIO)"), 0);
  assert_int_equal(try_take(f, CKL_LOCK_EXCLUSIVE, &f->ca, "node-a", NULL), -EIO);
  assert_false(sl_exists(f->wpath));
  assert_false(sl_exists(f->spath));
  assert_int_equal(ckl_test_count_entries(f->rpath, "b."), 1);
  /* Writers sweep leftovers once their mtime AND ctime (set by the
   * rename, just now) are a TTL old; not before. */
  assert_int_equal(try_take(f, CKL_LOCK_EXCLUSIVE, &f->ca, "node-a", NULL), 0);
  assert_int_equal(ckl_test_count_entries(f->rpath, "b."), 1);
  atomic_store(&f->wall_off, (STALE_MS(TTL_MS) + 1000) * MS);
  assert_int_equal(try_take(f, CKL_LOCK_EXCLUSIVE, &f->ca, "node-a", NULL), 0);
  assert_int_equal(ckl_test_count_entries(f->rpath, NULL), 0);
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_shared_and_exclusive),
      T(test_reentrancy),
      T(test_bad_arguments),
      T(test_dead_other_host_evicted_after_ttl_never_before),
      T(test_heartbeat_keeps_live_holder),
      T(test_strict_lease_expiry),
      T(test_heartbeat_thread),
      T(test_heartbeat_during_break_loses),
      T(test_heartbeat_before_break_keeps),
      T(test_waiting_writer_blocks_new_readers),
      T(test_failpoint_errors_leave_nothing),
      T(test_break_leftover_swept),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

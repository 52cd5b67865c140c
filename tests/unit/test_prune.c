/* Prune: the keep algorithm as a pure function (tables with exact
 * reasons, ISO weeks across a year boundary, rules that count a snapshot
 * kept by another rule, the newest always kept), then the operation: dry
 * run lists without removing, a snapshot in use is skipped with a warning
 * (not a failure), a snapshot being written is never removed, one whose
 * writer died is removed, a prune during a backup of the group is
 * CKL_EBUSY naming it. */
// ctest-labels: threads
#include "testutil.h"

#include "ops_util.h"

#define H 3600
#define D 86400
#define JAN1_2024 INT64_C(1704067200) /* a Monday, ISO week 2024-W01 */

enum {
  R = CKL_PRUNE_REMOVE,
  L = CKL_PRUNE_KEEP_LAST,
  HR = CKL_PRUNE_KEEP_HOURLY,
  DY = CKL_PRUNE_KEEP_DAILY,
  WK = CKL_PRUNE_KEEP_WEEKLY,
  MO = CKL_PRUNE_KEEP_MONTHLY,
  YR = CKL_PRUNE_KEEP_YEARLY
};

static void check(const int64_t *t, size_t n, ckl_prune_opts o, const int *want) {
  ckl_prune_reason got[128];
  assert_int_equal(ckl_prune_select(t, n, &o, got), 0);
  for (size_t i = 0; i < n; i++)
    if ((int)got[i] != want[i])
      fail_msg("snapshot %zu: got %s, want %s", i, ckl_prune_reason_name(got[i]),
               ckl_prune_reason_name((ckl_prune_reason)want[i]));
}

static void test_select_tables(void **state) {
  (void)state;
  const int64_t day0 = JAN1_2024 + 10 * D;
  { /* keep-last */
    int64_t t[] = {day0 + 4 * H, day0 + 3 * H, day0 + 2 * H, day0 + H, day0};
    check(t, 5, (ckl_prune_opts){.keep_last = 3}, (int[]){L, L, L, R, R});
    check(t, 5, (ckl_prune_opts){.keep_last = 9}, (int[]){L, L, L, L, L});
  }
  { /* daily: the newest of each day */
    int64_t t[] = {day0 + 12 * H, day0 + 8 * H, day0 - D + 23 * H, day0 - D + H, day0 - 2 * D};
    check(t, 5, (ckl_prune_opts){.keep_daily = 2}, (int[]){DY, R, DY, R, R});
    check(t, 5, (ckl_prune_opts){.keep_daily = 5}, (int[]){DY, R, DY, R, DY});
  }
  { /* a snapshot kept by keep-last counts for keep-daily too */
    int64_t t[] = {day0 + 12 * H, day0 + 10 * H, day0 - D, day0 - 2 * D};
    check(t, 4, (ckl_prune_opts){.keep_last = 1, .keep_daily = 2}, (int[]){L, R, DY, R});
    check(t, 4, (ckl_prune_opts){.keep_last = 2, .keep_daily = 2}, (int[]){L, L, DY, R});
  }
  { /* hourly */
    int64_t t[] = {day0 + 10 * H + 3540, day0 + 10 * H, day0 + 9 * H + 1800, day0 + 7 * H + 600};
    check(t, 4, (ckl_prune_opts){.keep_hourly = 2}, (int[]){HR, R, HR, R});
  }
  { /* ISO weeks: Mon 2024-12-30 is in 2025-W01 with Thu 2025-01-02;
       Sun 2024-12-29 is 2024-W52 */
    int64_t t[] = {INT64_C(1735808400), INT64_C(1735516800), INT64_C(1735473600)};
    check(t, 3, (ckl_prune_opts){.keep_weekly = 2}, (int[]){WK, R, WK});
  }
  { /* monthly and yearly together; credit goes to the first rule */
    int64_t t[] = {INT64_C(1710460800), INT64_C(1709251200), INT64_C(1707523200),
                   INT64_C(1703980800), INT64_C(1685577600), INT64_C(1640995200)};
    check(t, 6, (ckl_prune_opts){.keep_monthly = 2, .keep_yearly = 3},
          (int[]){MO, R, MO, YR, R, YR});
    check(t, 6, (ckl_prune_opts){.keep_yearly = 1}, (int[]){YR, R, R, R, R, R});
  }
  { /* every rule at once over 30 days of 6-hourly snapshots */
    int64_t t[120];
    for (int i = 0; i < 120; i++) t[i] = day0 + 30 * D - (int64_t)i * 6 * H;
    ckl_prune_opts o = {.keep_last = 2,
                        .keep_hourly = 3,
                        .keep_daily = 4,
                        .keep_weekly = 2,
                        .keep_monthly = 1,
                        .keep_yearly = 1};
    /* t[0] is Sat 2024-02-10 00:00, ISO week 6; each step is 6 h back.
     * last: 0, 1. hourly: 0, 1, 2. daily: the newest of Feb 10 (0),
     * Feb 9 (1: 18:00), Feb 8 (5), Feb 7 (9). weekly: week 6 (0) and
     * week 5, whose newest is Sun Feb 4 18:00 (21). monthly, yearly: 0. */
    int want[120];
    for (int i = 0; i < 120; i++) want[i] = R;
    want[0] = L;
    want[1] = L;
    want[2] = HR;
    want[5] = DY;
    want[9] = DY;
    want[21] = WK;
    check(t, 120, o, want);
  }
}

static void test_select_rules(void **state) {
  (void)state;
  int64_t t[] = {300, 200, 100};
  ckl_prune_reason out[3];
  ckl_prune_opts none = {0};
  assert_int_equal(ckl_prune_select(t, 3, &none, out), -EINVAL);
  ckl_prune_opts o = {.keep_daily = 1};
  int64_t unsorted[] = {100, 200};
  assert_int_equal(ckl_prune_select(unsorted, 2, &o, out), -EINVAL);
  int64_t dup[] = {100, 100};
  assert_int_equal(ckl_prune_select(dup, 2, &o, out), -EINVAL);
  assert_int_equal(ckl_prune_select(NULL, 0, &o, NULL), 0);
  assert_int_equal(ckl_prune_select(t, 3, NULL, out), -EINVAL);
  /* any single rule keeps the newest */
  for (int r = 0; r < 6; r++) {
    unsigned c[6] = {0};
    c[r] = 1;
    ckl_prune_opts one = {c[0], c[1], c[2], c[3], c[4], c[5], 0, NULL};
    assert_int_equal(ckl_prune_select(t, 3, &one, out), 0);
    assert_int_equal(out[0], (ckl_prune_reason)(CKL_PRUNE_KEEP_LAST + r));
    assert_int_equal(out[2], CKL_PRUNE_REMOVE);
  }
  assert_string_equal(ckl_prune_reason_name(CKL_PRUNE_KEEP_WEEKLY), "keep-weekly");
  assert_string_equal(ckl_prune_reason_name(CKL_PRUNE_ABANDONED), "abandoned");
  assert_string_equal(ckl_prune_reason_name((ckl_prune_reason)99), "unknown");
}

/* ---- the operation ------------------------------------------------------------ */

static int group_setup(void **state) { return ops_group_setup(state, "prune"); }

/* Six daily snapshots, newest = index 0 at OPS_T0 + 5 days. */
static void six_days(ops_store *s, ckl_snapshot_name n[6]) {
  for (int k = 5; k >= 0; k--) n[5 - k] = ops_make_snapshot(s->st, "host", "a", k * D, (uint32_t)k);
}

static void test_dry_run_then_prune(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n[6];
  six_days(s, n);
  ckl_group_name g = ops_group("host", "a");
  ckl_prune_opts o = {.keep_last = 2, .keep_weekly = 1, .dry_run = 1};
  ckl_prune_item *it;
  size_t cnt;
  assert_int_equal(ckl_prune(s->st, &g, &o, &it, &cnt), 0);
  assert_int_equal(cnt, 6);
  for (int i = 0; i < 6; i++) {
    assert_string_equal(it[i].name.time, n[i].time);
    assert_int_equal(it[i].rc, 0);
    assert_true(ops_snap_exists(s, &n[i])); /* dry run: nothing removed */
  }
  /* OPS_T0 is Tue 2023-11-14: days 0..5 run Tue..Sun of ISO week 46, so
   * the weekly rule's one week is the keep-last snapshots' week. */
  assert_int_equal(it[0].reason, CKL_PRUNE_KEEP_LAST);
  assert_int_equal(it[1].reason, CKL_PRUNE_KEEP_LAST);
  for (int i = 2; i < 6; i++) {
    assert_int_equal(it[i].keep, 0);
    assert_int_equal(it[i].reason, CKL_PRUNE_REMOVE);
  }
  free(it);
  o.dry_run = 0;
  assert_int_equal(ckl_prune(s->st, &g, &o, &it, &cnt), 0);
  assert_int_equal(cnt, 6);
  for (int i = 0; i < 6; i++) {
    assert_int_equal(it[i].rc, 0);
    assert_int_equal(ops_snap_exists(s, &n[i]), i < 2);
  }
  free(it);
  assert_int_equal(ops_trash_count(s), 0);
  assert_int_equal(ops_roster_count(s, "prune", NULL), 0);
  ckl_prune_opts none = {0};
  assert_int_equal(ckl_prune(s->st, &g, &none, &it, &cnt), -EINVAL);
  ckl_group_name nog = ops_group("host", "none");
  assert_int_equal(ckl_prune(s->st, &nog, &o, &it, &cnt), -ENOENT);
  assert_int_equal(cnt, 0);
}

static void test_busy_snapshot_skipped(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n[6];
  six_days(s, n);
  ckl_reader *r;
  assert_int_equal(ckl_reader_open(s->st, &n[4], NULL, &r), 0);
  ckl_test_log_capture();
  ckl_group_name g = ops_group("host", "a");
  ckl_prune_opts o = {.keep_last = 1};
  ckl_prune_item *it;
  size_t cnt;
  assert_int_equal(ckl_prune(s->st, &g, &o, &it, &cnt), 0);
  assert_int_equal(it[4].rc, CKL_EBUSY);
  assert_int_equal(it[4].keep, 0);
  assert_true(ops_snap_exists(s, &n[4]));
  assert_true(ckl_test_logged("is in use by read (pid "));
  for (int i = 1; i < 6; i++)
    if (i != 4) assert_false(ops_snap_exists(s, &n[i]));
  free(it);
  assert_int_equal(ckl_reader_close(r), 0);
  assert_int_equal(ckl_prune(s->st, &g, &o, &it, &cnt), 0);
  assert_int_equal(cnt, 2);
  assert_int_equal(it[1].rc, 0);
  assert_false(ops_snap_exists(s, &n[4]));
  free(it);
}

static void test_in_progress_and_abandoned(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n[6];
  six_days(s, n);
  /* two snapshots without manifest, newer than all: one held (a writer
   * at work), one nobody holds (its writer died) */
  ckl_snapshot_name held = ops_snap("host", "a", OPS_T0 + 7 * D);
  ckl_snapshot_name dead = ops_snap("host", "a", OPS_T0 + 6 * D);
  char *hd = ops_snap_dir(s, &held), *dd = ops_snap_dir(s, &dead);
  assert_int_equal(mkdir(hd, 0755), 0);
  assert_int_equal(mkdir(dd, 0755), 0);
  ckl_path_lock lk = {0};
  assert_int_equal(ckl_snapshot_lock(s->st, &held, CKL_LOCK_EXCLUSIVE, &lk, NULL), 0);
  ckl_group_name g = ops_group("host", "a");
  ckl_prune_opts o = {.keep_last = 2, .dry_run = 1};
  ckl_prune_item *it;
  size_t cnt;
  assert_int_equal(ckl_prune(s->st, &g, &o, &it, &cnt), 0);
  assert_int_equal(cnt, 8);
  assert_string_equal(it[0].name.time, held.time);
  assert_int_equal(it[0].keep, 1);
  assert_int_equal(it[0].reason, CKL_PRUNE_IN_PROGRESS);
  assert_int_equal(it[1].keep, 0);
  assert_int_equal(it[1].reason, CKL_PRUNE_ABANDONED);
  /* the rules count complete snapshots only */
  assert_int_equal(it[2].reason, CKL_PRUNE_KEEP_LAST);
  assert_int_equal(it[3].reason, CKL_PRUNE_KEEP_LAST);
  assert_int_equal(it[4].reason, CKL_PRUNE_REMOVE);
  free(it);
  assert_true(ops_exists(dd));
  o.dry_run = 0;
  assert_int_equal(ckl_prune(s->st, &g, &o, &it, &cnt), 0);
  assert_int_equal(it[0].reason, CKL_PRUNE_IN_PROGRESS);
  assert_int_equal(it[1].reason, CKL_PRUNE_ABANDONED);
  assert_int_equal(it[1].rc, 0);
  free(it);
  assert_true(ops_exists(hd));
  assert_false(ops_exists(dd));
  assert_true(ops_snap_exists(s, &n[0]));
  assert_true(ops_snap_exists(s, &n[1]));
  assert_false(ops_snap_exists(s, &n[2]));
  ckl_path_lock_release(&lk);
  free(hd);
  free(dd);
}

static void test_prune_during_backup(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n[6];
  six_days(s, n);
  ckl_group_name g = ops_group("host", "a");
  ckl_backup_opts bo = {.time_s = OPS_T0 + 9 * D};
  ckl_backup *b;
  assert_int_equal(ckl_backup_begin(s->st, &g, &bo, &b), 0);
  ckl_holder who = {0};
  ckl_prune_opts o = {.keep_last = 1, .busy_holder = &who};
  ckl_prune_item *it;
  size_t cnt;
  assert_int_equal(ckl_prune(s->st, &g, &o, &it, &cnt), CKL_EBUSY);
  assert_null(it);
  assert_string_equal(who.operation, "backup");
  assert_int_equal(who.pid, getpid());
  for (int i = 0; i < 6; i++) assert_true(ops_snap_exists(s, &n[i]));
  assert_int_equal(ops_write_didx(b, "root.didx", 1, 10, 1, NULL), 0);
  assert_int_equal(ckl_backup_finish(b), 0);
}

typedef struct prune_arg {
  ckl_store *st;
  ckl_group_name g;
  int rc;
  ckl_prune_item *it;
  size_t cnt;
} prune_arg;

static void *prune_thread(void *p) {
  prune_arg *a = p;
  ckl_prune_opts o = {.keep_last = 1};
  a->rc = ckl_prune(a->st, &a->g, &o, &a->it, &a->cnt);
  return NULL;
}

static void test_backup_during_prune(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n[6];
  six_days(s, n);
  assert_int_equal(ckl_failpoint_arm("prune.after_list", "pause"), 0);
  prune_arg pa = {.st = s->st, .g = ops_group("host", "a")};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, prune_thread, &pa), 0);
  assert_int_equal(ckl_failpoint_wait_hits("prune.after_list", 1, CKL_TEST_WAIT_MS), 0);
  ckl_holder who = {0};
  ckl_backup_opts bo = {.time_s = OPS_T0 + 9 * D, .busy_holder = &who};
  ckl_backup *b;
  assert_int_equal(ckl_backup_begin(s->st, &pa.g, &bo, &b), CKL_EBUSY);
  assert_string_equal(who.operation, "prune");
  assert_int_equal(ops_roster_count(s, "prune", "host/a"), 1);
  ckl_failpoint_release("prune.after_list");
  pthread_join(th, NULL);
  assert_int_equal(pa.rc, 0);
  assert_int_equal(pa.cnt, 6);
  free(pa.it);
  assert_true(ops_snap_exists(s, &n[0]));
  for (int i = 1; i < 6; i++) assert_false(ops_snap_exists(s, &n[i]));
}

#define T(f) cmocka_unit_test_setup_teardown(f, ops_reset, ops_reset)

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_select_tables), cmocka_unit_test(test_select_rules),
      T(test_dry_run_then_prune),           T(test_busy_snapshot_skipped),
      T(test_in_progress_and_abandoned),    T(test_prune_during_backup),
      T(test_backup_during_prune),
  };
  return cmocka_run_group_tests(tests, group_setup, ops_group_teardown);
}

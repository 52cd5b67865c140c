/*
 * The race matrix (tests/race/matrix.h), two threads of one process: A on a thread parked with `pause` (ckl_failpoint_wait_hits, ckl_failpoint_release), B on the test's thread.
 * Each test is one row of docs/locking.md: A at every one of its protocol
 * steps against every B; the expectations and their cells are in
 * matrix_expect.c. A row reports every mismatch before it fails.
 */
// ctest-labels: threads
// ctest-timeout: 600
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>

#include "matrix.h"

static void row(mx_op a) {
  int runs = 0;
  int bad = mx_run_row(a, MX_THREADS, &runs);
  fprintf(stderr, "row %s: %d runs, %d mismatches\n", mx_ops[a].code, runs, bad);
  assert_int_equal(bad, 0);
}

static void row_RI(void **s) { (void)s; row(MX_RI); }
static void row_BK(void **s) { (void)s; row(MX_BK); }
static void row_GM(void **s) { (void)s; row(MX_GM); }
static void row_GS(void **s) { (void)s; row(MX_GS); }
static void row_GX(void **s) { (void)s; row(MX_GX); }
static void row_UM(void **s) { (void)s; row(MX_UM); }
static void row_FG(void **s) { (void)s; row(MX_FG); }
static void row_PR(void **s) { (void)s; row(MX_PR); }
static void row_VF(void **s) { (void)s; row(MX_VF); }
static void row_RD(void **s) { (void)s; row(MX_RD); }
static void row_WS(void **s) { (void)s; row(MX_WS); }
static void row_WX(void **s) { (void)s; row(MX_WX); }

int main(void) {
  /* MX_ROW=row_BK runs one row (debugging) */
  if (getenv("MX_ROW")) cmocka_set_test_filter(getenv("MX_ROW"));
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(row_RI), cmocka_unit_test(row_BK), cmocka_unit_test(row_GM),
      cmocka_unit_test(row_GS), cmocka_unit_test(row_GX), cmocka_unit_test(row_UM),
      cmocka_unit_test(row_FG), cmocka_unit_test(row_PR), cmocka_unit_test(row_VF),
      cmocka_unit_test(row_RD), cmocka_unit_test(row_WS), cmocka_unit_test(row_WX),
  };
  return cmocka_run_group_tests(tests, mx_group_setup, mx_group_teardown);
}

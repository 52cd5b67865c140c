/* Error model: codes are in their block, names and messages come from the
 * one table, -errno values are named like the kernel names them. */
#include "testutil.h"

#include <errno.h>
#include <string.h>

static void test_domain_codes(void **state) {
  (void)state;
  assert_int_equal(CKL_EBUSY, -30001);
  assert_int_equal(CKL_ELOCKLOST, -30002);
  assert_true(ckl_is_domain_error(CKL_EBUSY));
  assert_true(ckl_is_domain_error(CKL_EFAILPOINT));
  assert_false(ckl_is_domain_error(-EBUSY));
  assert_false(ckl_is_domain_error(0));
  assert_string_equal(ckl_err_name(CKL_EBUSY), "CKL_EBUSY");
  assert_string_equal(ckl_err_name(CKL_EGCABORT), "CKL_EGCABORT");
  assert_string_equal(ckl_strerror(CKL_EBUSY), "locked by another holder");
  assert_string_equal(ckl_strerror(CKL_ETIMEDOUT), "timed out waiting for a lock");
}

static void test_errno_codes(void **state) {
  (void)state;
  assert_string_equal(ckl_err_name(-ENOENT), "ENOENT");
  assert_string_equal(ckl_err_name(-ENOSPC), "ENOSPC");
  assert_string_equal(ckl_strerror(-ENOENT), "No such file or directory");
  assert_string_equal(ckl_err_name(0), "OK");
  assert_string_equal(ckl_strerror(0), "success");
  assert_string_equal(ckl_err_name(-29000), "UNKNOWN");
  assert_string_equal(ckl_strerror(-29000), "unknown error");
  assert_string_equal(ckl_err_name(12345), "UNKNOWN");
}

static void test_every_code_named(void **state) {
  (void)state;
  for (int rc = CKL_ERR_BASE - 1; rc >= CKL_EFAILPOINT; rc--) {
    assert_true(strncmp(ckl_err_name(rc), "CKL_E", 5) == 0);
    assert_string_not_equal(ckl_strerror(rc), "unknown error");
  }
}

static void test_holder_format(void **state) {
  (void)state;
  char buf[128];
  ckl_holder h = {0};
  assert_int_equal(ckl_holder_format(&h, buf, sizeof buf), strlen("an unknown holder"));
  assert_string_equal(buf, "an unknown holder");
  h.known = 1;
  strcpy(h.operation, "gc");
  strcpy(h.host, "node1");
  h.pid = 42;
  h.since_ns = 1700000000LL * 1000000000LL;
  ckl_holder_format(&h, buf, sizeof buf);
  assert_string_equal(buf, "gc (pid 42 on node1, since 2023-11-14T22:13:20Z)");
  char small[5];
  assert_int_equal(ckl_holder_format(&h, small, sizeof small), 4);
  assert_string_equal(small, "gc (");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_domain_codes),
      cmocka_unit_test(test_errno_codes),
      cmocka_unit_test(test_every_code_named),
      cmocka_unit_test(test_holder_format),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The mark phase's touched-digest set: no false positives, growth, the
 * all-zero digest. */
#include "testutil.h"

#include <string.h>

#include "datastore/digest_set.h"

static ckl_digest mk(uint64_t i) {
  ckl_digest d;
  memset(&d, 0, sizeof d);
  /* spread like SHA-256 would: multiply into the hash bytes */
  uint64_t h = (i + 1) * 0x9E3779B97F4A7C15ULL;
  memcpy(d.b, &h, 8);
  memcpy(d.b + 24, &i, 8);
  return d;
}

static void test_insert_contains(void **state) {
  (void)state;
  ckl__digest_set s = {0};
  assert_false(ckl__digest_set_contains(&s, &(ckl_digest){{1}}));
  for (uint64_t i = 0; i < 100000; i++) {
    ckl_digest d = mk(i);
    assert_int_equal(ckl__digest_set_insert(&s, &d), 1);
  }
  for (uint64_t i = 0; i < 100000; i++) {
    ckl_digest d = mk(i);
    assert_int_equal(ckl__digest_set_insert(&s, &d), 0);
    assert_true(ckl__digest_set_contains(&s, &d));
  }
  /* digests that differ only in the last byte are distinct */
  ckl_digest d = mk(5);
  d.b[31] ^= 1;
  assert_false(ckl__digest_set_contains(&s, &d));
  assert_int_equal(ckl__digest_set_count(&s), 100000);
  /* load factor <= 0.75 => at most 64 bytes per entry at this size */
  assert_true(ckl__digest_set_bytes(&s) <= 100000 * 64 * 2);
  ckl__digest_set_free(&s);
  assert_int_equal(ckl__digest_set_count(&s), 0);
}

static void test_zero_digest(void **state) {
  (void)state;
  ckl__digest_set s = {0};
  ckl_digest z;
  memset(&z, 0, sizeof z);
  assert_false(ckl__digest_set_contains(&s, &z));
  assert_int_equal(ckl__digest_set_insert(&s, &z), 1);
  assert_int_equal(ckl__digest_set_insert(&s, &z), 0);
  assert_true(ckl__digest_set_contains(&s, &z));
  assert_int_equal(ckl__digest_set_count(&s), 1);
  ckl__digest_set_free(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_insert_contains),
      cmocka_unit_test(test_zero_digest),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

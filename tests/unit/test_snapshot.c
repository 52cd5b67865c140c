/* Snapshot and group names: the exact grammar, calendar validity, the
 * explicit-length parsers (NUL, control characters, slashes, ".."), the
 * time conversions checked against libc's timegm/gmtime, and a seeded
 * random search asserting that whatever parses formats back to itself. */
#include "testutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "datastore/store_internal.h"

#define T "2026-11-21T15:07:43Z"

static void test_valid_name(void **state) {
  (void)state;
  ckl_snapshot_name n;
  assert_int_equal(ckl_snapshot_name_parse("host/web-1/" T, &n), 0);
  assert_string_equal(n.type, "host");
  assert_string_equal(n.id, "web-1");
  assert_string_equal(n.time, T);
  assert_int_equal(n.time_s, 1795273663);
  char buf[CKL_SNAP_NAME_MAX + 1];
  assert_int_equal(ckl_snapshot_name_format(&n, buf, sizeof buf), (int)strlen("host/web-1/" T));
  assert_string_equal(buf, "host/web-1/" T);
  /* Buffer one byte short of the NUL. */
  assert_int_equal(ckl_snapshot_name_format(&n, buf, strlen("host/web-1/" T)), -ENAMETOOLONG);

  /* Every allowed character class. */
  assert_int_equal(ckl_snapshot_name_parse("vm-2/A_z.0-9..x/" T, &n), 0);
  assert_string_equal(n.id, "A_z.0-9..x");

  ckl_group_name g;
  ckl_snapshot_group(&n, &g);
  assert_string_equal(g.type, "vm-2");
  assert_string_equal(g.id, "A_z.0-9..x");
  assert_int_equal(ckl_group_name_parse("ct/100", &g), 0);
  assert_string_equal(g.type, "ct");
  assert_string_equal(g.id, "100");
}

static void test_length_limits(void **state) {
  (void)state;
  char type[40], id[140], s[256];
  ckl_snapshot_name n;
  memset(type, 'a', sizeof type);
  memset(id, 'b', sizeof id);
  snprintf(s, sizeof s, "%.32s/%.128s/" T, type, id);
  assert_int_equal(ckl_snapshot_name_parse(s, &n), 0);
  assert_int_equal(strlen(n.type), 32);
  assert_int_equal(strlen(n.id), 128);
  assert_int_equal(strlen(s), CKL_SNAP_NAME_MAX);
  snprintf(s, sizeof s, "%.33s/%.128s/" T, type, id);
  assert_int_equal(ckl_snapshot_name_parse(s, &n), -EINVAL);
  snprintf(s, sizeof s, "%.32s/%.129s/" T, type, id);
  assert_int_equal(ckl_snapshot_name_parse(s, &n), -EINVAL);
  assert_int_equal(ckl_snapshot_type_valid(type, 32), 1);
  assert_int_equal(ckl_snapshot_type_valid(type, 33), 0);
  assert_int_equal(ckl_snapshot_id_valid(id, 128), 1);
  assert_int_equal(ckl_snapshot_id_valid(id, 129), 0);
}

static void test_invalid_names(void **state) {
  (void)state;
  static const char *const bad[] = {
      "",
      "host",
      "host/web",
      "host/web/",
      "/web/" T,
      "host//" T,
      "host/web//" T,
      "Host/web/" T,        /* type is lowercase */
      "ho_st/web/" T,       /* '_' not in types */
      "host/../" T,         /* traversal */
      "host/./" T,
      "../web/" T,
      "host/.hidden/" T,    /* ids never start with '.' */
      "host/a/b/" T,        /* slash inside the id */
      "host/web/../" T,
      "host/web/" T "/",
      "host/web/" T "x",
      " host/web/" T,
      "host/web /" T,
      "host/we\x01b/" T,    /* control characters */
      "host/we\x7f" "b/" T,
      "host/we\nb/" T,
      "host/web/" T "\n",
      "host/w\xc3\xa9" "b/" T, /* non-ASCII */
      "host/web/2026-11-21T15:07:43",   /* no Z */
      "host/web/2026-11-21T15:07:43z",
      "host/web/2026-11-21t15:07:43Z",
      "host/web/2026-11-21 15:07:43Z",
      "host/web/2026-11-21T15:07:43+00:00",
      "host/web/2026-11-21T15:07:43.5Z",
      "host/web/2026-11-21T15:07Z",
      "host/web/26-11-21T15:07:43Z",
      "host/web/+026-11-21T15:07:43Z",
      "host/web/2026-1-021T15:07:43Z",
      "host/web/2026-02-29T00:00:00Z",  /* 2026 is no leap year */
      "host/web/1900-02-29T00:00:00Z",  /* neither is 1900 */
      "host/web/2026-04-31T00:00:00Z",
      "host/web/2026-13-01T00:00:00Z",
      "host/web/2026-00-10T00:00:00Z",
      "host/web/2026-01-00T00:00:00Z",
      "host/web/2026-01-32T00:00:00Z",
      "host/web/2026-01-01T24:00:00Z",
      "host/web/2026-01-01T00:60:00Z",
      "host/web/2026-01-01T00:00:60Z",  /* no leap seconds */
      "host/web/2026-01-01T00:00:-1Z",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ckl_snapshot_name n;
    memset(&n, 0x55, sizeof n);
    int rc = ckl_snapshot_name_parse(bad[i], &n);
    if (rc != -EINVAL) fail_msg("accepted \"%s\"", bad[i]);
    /* A rejected parse leaves nothing half-filled behind. */
    assert_int_equal(n.type[0], 0);
    assert_int_equal(n.time_s, 0);
  }
  ckl_snapshot_name n;
  assert_int_equal(ckl_snapshot_name_parse(NULL, &n), -EINVAL);
  assert_int_equal(ckl_snapshot_name_parse("host/web/" T, NULL), -EINVAL);
  /* Leap days that exist. */
  assert_int_equal(ckl_snapshot_name_parse("host/web/2024-02-29T23:59:59Z", &n), 0);
  assert_int_equal(n.time_s, 1709251199);
  assert_int_equal(ckl_snapshot_name_parse("host/web/2000-02-29T00:00:00Z", &n), 0);

  ckl_group_name g;
  assert_int_equal(ckl_group_name_parse("host", &g), -EINVAL);
  assert_int_equal(ckl_group_name_parse("host/", &g), -EINVAL);
  assert_int_equal(ckl_group_name_parse("/web", &g), -EINVAL);
  assert_int_equal(ckl_group_name_parse("host/..", &g), -EINVAL);
  assert_int_equal(ckl_group_name_parse("host/a/b", &g), -EINVAL);
}

/* The explicit length is honoured: a NUL inside is a bad character, not
 * the end of the string, and bytes past len are never looked at. */
static void test_explicit_length(void **state) {
  (void)state;
  const char with_nul[] = "host/we\0b/" T;
  ckl_snapshot_name n;
  assert_int_equal(ckl_snapshot_name_parsen(with_nul, sizeof with_nul - 1, &n), -EINVAL);
  const char nul_in_time[] = "host/web/2026-11-21T15:07:4\0Z";
  assert_int_equal(ckl_snapshot_name_parsen(nul_in_time, sizeof nul_in_time - 1, &n), -EINVAL);
  const char trailing_nul[] = "host/web/" T "\0";
  assert_int_equal(ckl_snapshot_name_parsen(trailing_nul, sizeof trailing_nul - 1, &n), -EINVAL);

  /* A valid prefix of a longer buffer. */
  const char *longer = "host/web/" T "garbage";
  assert_int_equal(ckl_snapshot_name_parsen(longer, strlen("host/web/" T), &n), 0);
  assert_string_equal(n.time, T);

  /* An exact-size heap copy without a terminator: ASan catches any read
   * past the end. */
  size_t len = strlen("host/web/" T);
  char *exact = malloc(len);
  memcpy(exact, "host/web/" T, len);
  assert_int_equal(ckl_snapshot_name_parsen(exact, len, &n), 0);
  for (size_t k = 0; k < len; k++)
    assert_int_equal(ckl_snapshot_name_parsen(exact, k, &n), -EINVAL);
  free(exact);

  ckl_group_name g;
  assert_int_equal(ckl_group_name_parsen("ct/1\0002", 6, &g), -EINVAL);
  assert_int_equal(ckl_group_name_parsen("ct/100", 5, &g), 0);
  assert_string_equal(g.id, "10");
}

static void test_time_conversions(void **state) {
  (void)state;
  char buf[CKL_SNAP_TIME_LEN + 1];
  int64_t t;
  assert_int_equal(ckl_snapshot_time_format(0, buf), 0);
  assert_string_equal(buf, "1970-01-01T00:00:00Z");
  assert_int_equal(ckl_snapshot_time_format(-1, buf), 0);
  assert_string_equal(buf, "1969-12-31T23:59:59Z");
  assert_int_equal(ckl_snapshot_time_format(253402300799LL, buf), 0);
  assert_string_equal(buf, "9999-12-31T23:59:59Z");
  assert_int_equal(ckl_snapshot_time_format(253402300800LL, buf), -EINVAL);
  assert_int_equal(ckl_snapshot_time_format(-62167219200LL, buf), 0);
  assert_string_equal(buf, "0000-01-01T00:00:00Z");
  assert_int_equal(ckl_snapshot_time_format(-62167219201LL, buf), -EINVAL);
  assert_int_equal(ckl_snapshot_time_parse("0001-01-01T00:00:00Z", 20, &t), 0);
  assert_int_equal(t, -62135596800LL);

  /* Against libc (64-bit time_t), over the whole range, seeded. */
  srand(12345);
  for (int i = 0; i < 20000; i++) {
    int64_t v = (((int64_t)rand() << 31) ^ rand()) % 253402300799LL;
    if (i % 3 == 0) v = -(v % 62135596800LL);
    assert_int_equal(ckl_snapshot_time_format(v, buf), 0);
    time_t tt = (time_t)v;
    struct tm tm;
    assert_non_null(gmtime_r(&tt, &tm));
    char ref[64];
    snprintf(ref, sizeof ref, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    assert_string_equal(buf, ref);
    assert_int_equal(ckl_snapshot_time_parse(buf, 20, &t), 0);
    assert_int_equal(t, v);
    assert_int_equal(timegm(&tm), (time_t)v);
  }
}

static void test_make(void **state) {
  (void)state;
  ckl_snapshot_name n;
  assert_int_equal(ckl_snapshot_name_make("host", "web", 1795273663, &n), 0);
  assert_string_equal(n.time, T);
  assert_true(ckl__snapshot_name_ok(&n));
  assert_int_equal(ckl_snapshot_name_make("host", "..", 0, &n), -EINVAL);
  assert_int_equal(ckl_snapshot_name_make("host", "a/b", 0, &n), -EINVAL);
  assert_int_equal(ckl_snapshot_name_make("HOST", "a", 0, &n), -EINVAL);
  assert_int_equal(ckl_snapshot_name_make("host", "a", 253402300800LL, &n), -EINVAL);
  assert_int_equal(n.type[0], 0);

  /* A hand-built name whose time_s disagrees with its time is refused. */
  assert_int_equal(ckl_snapshot_name_make("host", "web", 1795273663, &n), 0);
  n.time_s++;
  char buf[256];
  assert_int_equal(ckl_snapshot_name_format(&n, buf, sizeof buf), -EINVAL);
  n.time_s--;
  memcpy(n.id, "a/b", 4);
  assert_int_equal(ckl_snapshot_name_format(&n, buf, sizeof buf), -EINVAL);
}

static void test_archive_names(void **state) {
  (void)state;
  assert_int_equal(ckl_archive_name_kind("root.didx", 9), CKL_ARCHIVE_DIDX);
  assert_int_equal(ckl_archive_name_kind("disk-0.img.fidx", 15), CKL_ARCHIVE_FIDX);
  assert_int_equal(ckl_archive_name_kind(".didx", 5), CKL_ARCHIVE_NONE);
  assert_int_equal(ckl_archive_name_kind(".x.didx", 7), CKL_ARCHIVE_NONE);
  assert_int_equal(ckl_archive_name_kind("x.blob", 6), CKL_ARCHIVE_NONE);
  assert_int_equal(ckl_archive_name_kind("a/b.didx", 8), CKL_ARCHIVE_NONE);
  assert_int_equal(ckl_archive_name_kind("a\0b.didx", 8), CKL_ARCHIVE_NONE);
  assert_int_equal(ckl_archive_name_kind("x.didx.tmp", 10), CKL_ARCHIVE_NONE);
  assert_int_equal(ckl_archive_name_kind("index.json", 10), CKL_ARCHIVE_NONE);
}

/* Random strings over an alphabet rich in the characters the grammar
 * cares about. Invariant: whatever parses is canonical, i.e. formats back
 * to exactly the input; nothing reads past len (ASan build). */
static void test_random_roundtrip(void **state) {
  (void)state;
  static const char alphabet[] = "ab0-_./TZ:19\0\x01\xff/";
  const char *seeds[] = {"host/web/2026-11-21T15:07:43Z", "ct/100/2024-02-29T23:59:59Z",
                         "a/b/0000-01-01T00:00:00Z"};
  srand(4242);
  int accepted = 0;
  for (int i = 0; i < 200000; i++) {
    char buf[64];
    const char *seed = seeds[i % 3];
    size_t len = strlen(seed);
    memcpy(buf, seed, len);
    int edits = 1 + rand() % 3;
    for (int e = 0; e < edits; e++) {
      size_t pos = (size_t)rand() % len;
      buf[pos] = alphabet[rand() % (int)(sizeof alphabet - 1)];
    }
    if (rand() % 8 == 0 && len > 1) len -= 1 + (size_t)rand() % 3;
    char *exact = malloc(len);
    memcpy(exact, buf, len);
    ckl_snapshot_name n;
    if (ckl_snapshot_name_parsen(exact, len, &n) == 0) {
      accepted++;
      char out[CKL_SNAP_NAME_MAX + 1];
      assert_int_equal(ckl_snapshot_name_format(&n, out, sizeof out), (int)len);
      assert_memory_equal(out, exact, len);
      assert_null(memchr(exact, '\0', len));
      assert_null(strstr(out, "/."));
    }
    free(exact);
  }
  /* The search must have exercised the accepting path too. */
  assert_true(accepted > 1000);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid_name),      cmocka_unit_test(test_length_limits),
      cmocka_unit_test(test_invalid_names),   cmocka_unit_test(test_explicit_length),
      cmocka_unit_test(test_time_conversions), cmocka_unit_test(test_make),
      cmocka_unit_test(test_archive_names),   cmocka_unit_test(test_random_roundtrip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

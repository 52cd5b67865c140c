/* The file catalog of `chunklock backup` (tools/catalog.c): round trip
 * through JSON including names that are not UTF-8, and the parser's
 * refusal of everything that could make a restore write outside DEST or
 * misread a snapshot: unsafe paths, entries before their directory or
 * outside the roots, repeated paths, bad archive names, sizes that do not
 * match an archive, malformed hex, newer formats. */
#include "testutil.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tools/catalog.c"

static void add(catalog *c, const char *path, cat_type t, const char *archive, uint64_t size,
                const char *target) {
  cat_entry e = {.path = (char *)path, .type = t, .mode = 0644, .mtime_ns = 123456789,
                 .size = size, .archive = (char *)archive, .target = (char *)target};
  assert_int_equal(cat_add(c, &e), 0);
}

static void test_path_ok(void **state) {
  (void)state;
  assert_true(cat_path_ok("a"));
  assert_true(cat_path_ok("a/b/c"));
  assert_true(cat_path_ok("..a/b.."));
  assert_true(cat_path_ok("a/.hidden"));
  const char *bad[] = {"", "/a", "a/", "a//b", ".", "..", "a/./b", "a/../b", "../a", "a/.."};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) assert_false(cat_path_ok(bad[i]));
  assert_false(cat_path_ok(NULL));
}

static void test_round_trip(void **state) {
  (void)state;
  catalog c = {.avg = 1024, .min = 256, .max = 4096, .created_ns = 42};
  assert_int_equal(cat_add_root(&c, "r"), 0);
  assert_int_equal(cat_add_root(&c, "bad\xff"), 0);
  add(&c, "r", CAT_DIR, NULL, 0, NULL);
  add(&c, "r/f", CAT_FILE, "f00000001.didx", 10, NULL);
  add(&c, "r/empty", CAT_FILE, NULL, 0, NULL);
  add(&c, "r/l", CAT_SYMLINK, NULL, 0, "t\xfe\x01");
  add(&c, "r/\xc3\xa9t\xc3\xa9", CAT_FILE, "f00000002.didx", 1, NULL);
  add(&c, "bad\xff", CAT_DIR, NULL, 0, NULL);
  add(&c, "bad\xff/x", CAT_FILE, NULL, 0, NULL);
  json_t *j = cat_to_json(&c);
  assert_non_null(j);
  /* non-UTF-8 bytes went to *_hex keys, UTF-8 stayed readable */
  json_t *entries = json_object_get(j, "entries");
  assert_string_equal(json_string_value(json_object_get(json_array_get(entries, 4), "path")),
                      "r/\xc3\xa9t\xc3\xa9");
  assert_string_equal(
      json_string_value(json_object_get(json_array_get(entries, 3), "target_hex")), "74fe01");
  char *txt = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  j = json_loads(txt, 0, NULL);
  free(txt);
  catalog back;
  char why[128] = "";
  assert_int_equal(cat_from_json(j, &back, why, sizeof why), 0);
  json_decref(j);
  assert_int_equal(back.n, c.n);
  assert_int_equal(back.nroots, 2);
  assert_string_equal(back.roots[1], "bad\xff");
  for (size_t i = 0; i < c.n; i++) {
    assert_string_equal(back.v[i].path, c.v[i].path);
    assert_int_equal(back.v[i].type, c.v[i].type);
    assert_int_equal(back.v[i].size, c.v[i].size);
    assert_int_equal(back.v[i].mtime_ns, c.v[i].mtime_ns);
  }
  assert_string_equal(back.v[3].target, "t\xfe\x01");
  assert_string_equal(back.v[1].archive, "f00000001.didx");
  assert_null(back.v[2].archive);
  assert_int_equal(back.avg, 1024);
  assert_non_null(cat_find(&back, "r/f"));
  assert_ptr_equal(cat_find(&back, "bad\xff/x"), &back.v[6]);
  assert_null(cat_find(&back, "r/nope"));
  cat_free(&back);
  cat_free(&c);
}

/* A document with one root "r" (a directory) and the given entries. */
static int parse(const char *entries_json, char *why, size_t wl) {
  char doc[2048];
  snprintf(doc, sizeof doc,
           "{\"format\":1,\"created_ns\":1,\"chunker\":{\"avg\":1024,\"min\":256,\"max\":4096},"
           "\"roots\":[{\"name\":\"r\"}],\"entries\":[{\"path\":\"r\",\"type\":\"dir\","
           "\"mode\":493,\"mtime_ns\":1}%s]}",
           entries_json);
  json_error_t e;
  json_t *j = json_loads(doc, JSON_ALLOW_NUL, &e); /* so the NUL case reaches the parser */
  assert_non_null(j);
  catalog c;
  int rc = cat_from_json(j, &c, why, wl);
  json_decref(j);
  if (rc == 0) cat_free(&c);
  return rc;
}

static void test_rejects(void **state) {
  (void)state;
  char why[128];
  assert_int_equal(parse("", why, sizeof why), 0);
  assert_int_equal(parse(",{\"path\":\"r/f\",\"type\":\"file\",\"mode\":420,\"mtime_ns\":1,"
                         "\"size\":3,\"archive\":\"f1.didx\"}", why, sizeof why), 0);
  const char *bad[] = {
      /* escapes */
      ",{\"path\":\"r/../x\",\"type\":\"dir\",\"mode\":493,\"mtime_ns\":1}",
      ",{\"path\":\"/etc\",\"type\":\"dir\",\"mode\":493,\"mtime_ns\":1}",
      ",{\"path\":\"..\",\"type\":\"dir\",\"mode\":493,\"mtime_ns\":1}",
      ",{\"path_hex\":\"2e2e2f78\",\"type\":\"dir\",\"mode\":493,\"mtime_ns\":1}",
      /* a file under a symlink: its parent is not a directory entry */
      ",{\"path\":\"r/l\",\"type\":\"symlink\",\"target\":\"/etc\",\"mtime_ns\":1},"
      "{\"path\":\"r/l/passwd\",\"type\":\"file\",\"mode\":420,\"mtime_ns\":1,\"size\":0}",
      /* before its directory, outside the roots, repeated */
      ",{\"path\":\"r/d/f\",\"type\":\"file\",\"mode\":420,\"mtime_ns\":1,\"size\":0},"
      "{\"path\":\"r/d\",\"type\":\"dir\",\"mode\":493,\"mtime_ns\":1}",
      ",{\"path\":\"other\",\"type\":\"dir\",\"mode\":493,\"mtime_ns\":1}",
      ",{\"path\":\"r\",\"type\":\"dir\",\"mode\":493,\"mtime_ns\":1}",
      /* archives: bad name, the catalog itself, size without archive and back */
      ",{\"path\":\"r/f\",\"type\":\"file\",\"mode\":420,\"mtime_ns\":1,\"size\":3,"
      "\"archive\":\"../x.didx\"}",
      ",{\"path\":\"r/f\",\"type\":\"file\",\"mode\":420,\"mtime_ns\":1,\"size\":3,"
      "\"archive\":\"catalog.didx\"}",
      ",{\"path\":\"r/f\",\"type\":\"file\",\"mode\":420,\"mtime_ns\":1,\"size\":3}",
      ",{\"path\":\"r/f\",\"type\":\"file\",\"mode\":420,\"mtime_ns\":1,\"size\":0,"
      "\"archive\":\"f1.didx\"}",
      /* types, modes, hex */
      ",{\"path\":\"r/f\",\"type\":\"fifo\",\"mode\":420,\"mtime_ns\":1}",
      ",{\"path\":\"r/f\",\"type\":\"dir\",\"mode\":65535,\"mtime_ns\":1}",
      ",{\"path\":\"r/f\",\"type\":\"dir\",\"mode\":-1,\"mtime_ns\":1}",
      ",{\"path\":\"r/f\",\"type\":\"dir\",\"mtime_ns\":1}",
      ",{\"path_hex\":\"722f00\",\"type\":\"dir\",\"mode\":493,\"mtime_ns\":1}",
      ",{\"path_hex\":\"722fzz\",\"type\":\"dir\",\"mode\":493,\"mtime_ns\":1}",
      ",{\"path_hex\":\"722\",\"type\":\"dir\",\"mode\":493,\"mtime_ns\":1}",
      ",{\"path\":\"r/s\",\"type\":\"symlink\",\"mtime_ns\":1}",
      ",{\"path\":\"r/x\\u0000y\",\"type\":\"dir\",\"mode\":493,\"mtime_ns\":1}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    why[0] = '\0';
    int rc = parse(bad[i], why, sizeof why);
    if (rc != CKL_ECORRUPT) fprintf(stderr, "case %zu accepted: %s\n", i, bad[i]);
    assert_int_equal(rc, CKL_ECORRUPT);
    assert_true(why[0] != '\0');
  }
  /* a newer format is refused as such; a non-object outright */
  json_t *j = json_loads("{\"format\":2}", 0, NULL);
  catalog c;
  assert_int_equal(cat_from_json(j, &c, why, sizeof why), CKL_EVERSION);
  json_decref(j);
  j = json_loads("[1]", 0, NULL);
  assert_int_equal(cat_from_json(j, &c, why, sizeof why), CKL_ECORRUPT);
  json_decref(j);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_path_ok),
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_rejects),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

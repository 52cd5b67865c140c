/* The manifest: exact bytes written (sorted keys, indented or compact),
 * load errors (missing, malformed, duplicate keys, wrong types, newer
 * format, symlink) with file/line/column in the log, write_new refusing a
 * second write, and update_manifest: unprotected changes land, protected
 * ones are refused byte-exactly, the lock deadline names its holder, and
 * the lock is held from load to write (forced with failpoints). */
// ctest-labels: threads
#include "testutil.h"

#include <limits.h>
#define BIG (2 * PATH_MAX) /* room for a path plus a suffix, without truncation warnings */

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "datastore/store_internal.h"

#define SNAP "host/web/2026-11-21T15:07:43Z"
#define CSUM "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


typedef struct fixture {
  char *dir, *path;
  ckl_store *st;
  ckl_snapshot_name sn;
  char snapdir[BIG];
  char mpath[BIG + 16]; /* index.json */
} fixture;

/* One store for the file (making one costs seconds on a busy disk); each
 * test starts from an empty snapshot directory SNAP. */
static int group_setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  f->dir = ckl_test_mkdtemp("manifest");
  f->path = ckl_test_path(f->dir, "store");
  ckl_store_create_opts o = {.sync = CKL_SYNC_NONE};
  if (ckl_store_create(f->path, &o) != 0 || ckl_store_open(f->path, NULL, &f->st) != 0) return -1;
  if (ckl_snapshot_name_parse(SNAP, &f->sn) != 0) return -1;
  snprintf(f->snapdir, sizeof f->snapdir, "%s/" SNAP, f->path);
  snprintf(f->mpath, sizeof f->mpath, "%s/index.json", f->snapdir);
  *state = f;
  return 0;
}

static int group_teardown(void **state) {
  fixture *f = *state;
  ckl_store_close(f->st);
  ckl_test_rmtree(f->dir);
  free(f->path);
  free(f->dir);
  free(f);
  return 0;
}

static int setup(void **state) {
  fixture *f = *state;
  char *host = ckl_test_path(f->path, "host");
  ckl_test_rmtree(host);
  assert_int_equal(mkdir(host, 0755), 0);
  char *web = ckl_test_path(host, "web");
  assert_int_equal(mkdir(web, 0755), 0);
  assert_int_equal(mkdir(f->snapdir, 0755), 0);
  free(web);
  free(host);
  ckl_test_log_clear();
  ckl_test_log_capture();
  return 0;
}

static int teardown(void **state) {
  (void)state;
  ckl_log_set(NULL, NULL, CKL_LOG_ERROR);
  ckl_failpoint_disarm_all();
  return 0;
}

/* The manifest the tests start from, as ckl_manifest_write_new writes it. */
#define VALID                                                                                    \
  "{\n"                                                                                          \
  "  \"created\": \"2026-11-21T15:07:43Z\",\n"                                                   \
  "  \"files\": [\n"                                                                             \
  "    {\n"                                                                                      \
  "      \"csum\": \"" CSUM "\",\n"                                                              \
  "      \"name\": \"root.didx\",\n"                                                             \
  "      \"size\": 1234\n"                                                                       \
  "    }\n"                                                                                      \
  "  ],\n"                                                                                       \
  "  \"format\": 1,\n"                                                                           \
  "  \"snapshot\": \"" SNAP "\",\n"                                                              \
  "  \"unprotected\": {}\n"                                                                      \
  "}\n"

static void write_raw(fixture *f, const char *text) {
  ckl_test_write_file(f->mpath, text, strlen(text));
}

static ckl_digest digest_of_csum(void) {
  ckl_digest d;
  for (int i = 0; i < 32; i++) {
    unsigned v;
    sscanf(&CSUM[2 * i], "%2x", &v);
    d.b[i] = (uint8_t)v;
  }
  return d;
}

static void test_write_new_exact_bytes(void **state) {
  fixture *f = *state;
  json_t *m;
  assert_int_equal(ckl_manifest_new(&f->sn, &m), 0);
  json_object_set_new(m, "created", json_string("2026-11-21T15:07:43Z"));
  ckl_digest d = digest_of_csum();
  assert_int_equal(ckl_manifest_add_file(m, "root.didx", 1234, &d), 0);
  assert_int_equal(ckl_manifest_add_file(m, "root.didx", 1, &d), -EINVAL); /* twice */
  assert_int_equal(ckl_manifest_add_file(m, "../x.didx", 1, &d), -EINVAL);
  assert_int_equal(ckl_manifest_add_file(m, "x.blob", 1, &d), -EINVAL);
  assert_int_equal(ckl_manifest_validate(m, &f->sn), 0);
  assert_int_equal(ckl_manifest_write_new(f->st, &f->sn, m, 0), 0);
  size_t len;
  char *got = ckl_test_read_file(f->mpath, &len);
  assert_string_equal(got, VALID);
  free(got);
  /* Only one first write. */
  ckl_test_log_clear();
  assert_int_equal(ckl_manifest_write_new(f->st, &f->sn, m, 0), -EEXIST);
  ckl_test_assert_logged("index.json: already exists");

  /* Compact form, on another snapshot. m names SNAP, not other: refused
   * (before anything else is looked at). */
  ckl_snapshot_name other;
  assert_int_equal(ckl_snapshot_name_parse("host/web/2026-11-22T00:00:00Z", &other), 0);
  ckl_test_log_clear();
  assert_int_equal(ckl_manifest_write_new(f->st, &other, m, CKL_MANIFEST_COMPACT), CKL_ECORRUPT);
  ckl_test_assert_logged("snapshot: names another snapshot");
  json_object_set_new(m, "snapshot", json_string("host/web/2026-11-22T00:00:00Z"));
  assert_int_equal(ckl_manifest_write_new(f->st, &other, m, CKL_MANIFEST_COMPACT), -ENOENT);
  char p[BIG];
  ckl_snapshot_path(f->st, &other, p, sizeof p);
  assert_int_equal(mkdir(p, 0755), 0);
  assert_int_equal(ckl_manifest_write_new(f->st, &other, m, CKL_MANIFEST_COMPACT), 0);
  strncat(p, "/index.json", sizeof p - strlen(p) - 1);
  got = ckl_test_read_file(p, &len);
  assert_string_equal(got, "{\"created\":\"2026-11-21T15:07:43Z\",\"files\":[{\"csum\":\"" CSUM
                           "\",\"name\":\"root.didx\",\"size\":1234}],\"format\":1,"
                           "\"snapshot\":\"host/web/2026-11-22T00:00:00Z\",\"unprotected\":{}}\n");
  free(got);
  json_decref(m);

  json_t *loaded;
  assert_int_equal(ckl_manifest_load(f->st, &f->sn, &loaded), 0);
  assert_string_equal(json_string_value(json_object_get(loaded, "snapshot")), SNAP);
  assert_int_equal(json_array_size(json_object_get(loaded, "files")), 1);
  json_decref(loaded);
}

static void test_load_missing(void **state) {
  fixture *f = *state;
  json_t *m = (json_t *)0x1;
  assert_int_equal(ckl_manifest_load(f->st, &f->sn, &m), -ENOENT);
  assert_null(m);
  ckl_snapshot_name nope;
  assert_int_equal(ckl_snapshot_name_parse("host/nope/2026-11-21T15:07:43Z", &nope), 0);
  assert_int_equal(ckl_manifest_load(f->st, &nope, &m), -ENOENT);
  /* A symlinked manifest is never followed. */
  char *target = ckl_test_path(f->dir, "elsewhere.json");
  ckl_test_write_file(target, VALID, strlen(VALID));
  assert_int_equal(symlink(target, f->mpath), 0);
  assert_int_equal(ckl_manifest_load(f->st, &f->sn, &m), -ELOOP);
  free(target);
}

/* ---- update_manifest ------------------------------------------------------ */

static int set_notes(json_t *m, void *arg) {
  json_object_set_new(json_object_get(m, "unprotected"), "notes", json_string(arg));
  return 0;
}

static int touch_files(json_t *m, void *arg) {
  (void)arg;
  json_object_set_new(json_object_get(m, "unprotected"), "notes", json_string("sneaky"));
  json_array_append_new(json_object_get(m, "files"), json_string("extra"));
  return 0;
}

static int touch_size(json_t *m, void *arg) {
  (void)arg;
  json_object_set_new(json_array_get(json_object_get(m, "files"), 0), "size", json_integer(1));
  return 0;
}

static int add_top_key(json_t *m, void *arg) {
  (void)arg;
  json_object_set_new(m, "verify_state", json_string("ok"));
  return 0;
}

static int change_created(json_t *m, void *arg) {
  (void)arg;
  json_object_set_new(m, "created", json_string("2027-01-01T00:00:00Z"));
  return 0;
}

static int drop_unprotected(json_t *m, void *arg) {
  (void)arg;
  json_object_del(m, "unprotected");
  return 0;
}

static int abort_update(json_t *m, void *arg) {
  (void)arg;
  json_object_set_new(json_object_get(m, "unprotected"), "notes", json_string("never"));
  return -ECANCELED;
}

static int no_change(json_t *m, void *arg) {
  (void)m;
  (void)arg;
  return 0;
}

typedef struct bad_case {
  const char *text;
  int rc;
  const char *log; /* expected substring, after the file name */
} bad_case;

static void test_load_corrupt(void **state) {
  fixture *f = *state;
  static const bad_case cases[] = {
      /* malformed JSON: missing comma, jansson's position */
      {"{\n  \"created\": \"2026-11-21T15:07:43Z\"\n  \"files\": []\n}\n", CKL_ECORRUPT,
       "index.json:3:"},
      /* duplicate key */
      {"{\"format\": 1,\n \"format\": 1}\n", CKL_ECORRUPT, "index.json:2:"},
      /* wrong type inside a file entry */
      {"{\n  \"created\": \"2026-11-21T15:07:43Z\",\n  \"files\": [\n    {\n"
       "      \"csum\": \"" CSUM "\",\n      \"name\": \"root.didx\",\n"
       "      \"size\": \"1234\"\n    }\n  ],\n  \"format\": 1,\n"
       "  \"snapshot\": \"" SNAP "\",\n  \"unprotected\": {}\n}\n",
       CKL_ECORRUPT, "index.json:7:15: files[0].size: expected an integer"},
      /* unprotected not an object */
      {"{\"created\": \"2026-11-21T15:07:43Z\", \"files\": [], \"format\": 1,\n"
       " \"snapshot\": \"" SNAP "\", \"unprotected\": []}\n",
       CKL_ECORRUPT, "index.json:2:62: unprotected: expected an object"},
      /* a manifest copied from another snapshot */
      {"{\"created\": \"2026-11-21T15:07:43Z\", \"files\": [], \"format\": 1,\n"
       " \"snapshot\": \"host/db/2026-11-21T15:07:43Z\", \"unprotected\": {}}\n",
       CKL_ECORRUPT, "index.json:2:14: snapshot: names another snapshot"},
      /* traversal in a file name */
      {"{\"created\": \"2026-11-21T15:07:43Z\", \"format\": 1, \"unprotected\": {},\n"
       " \"snapshot\": \"" SNAP "\",\n"
       " \"files\": [{\"csum\": \"" CSUM "\", \"name\": \"../../x.didx\", \"size\": 1}]}\n",
       CKL_ECORRUPT, "index.json:3:"},
      /* csum not hex */
      {"{\"created\": \"2026-11-21T15:07:43Z\", \"format\": 1, \"unprotected\": {},\n"
       " \"snapshot\": \"" SNAP "\",\n"
       " \"files\": [{\"csum\": \"xyz\", \"name\": \"a.didx\", \"size\": 1}]}\n",
       CKL_ECORRUPT, "index.json:3:21: files[0].csum: expected 64 lowercase hex digits"},
      /* negative size */
      {"{\"created\": \"2026-11-21T15:07:43Z\", \"format\": 1, \"unprotected\": {},\n"
       " \"snapshot\": \"" SNAP "\",\n"
       " \"files\": [{\"csum\": \"" CSUM "\", \"name\": \"a.didx\", \"size\": -1}]}\n",
       CKL_ECORRUPT, "files[0].size: -1 is out of range"},
      /* same file twice */
      {"{\"created\": \"2026-11-21T15:07:43Z\", \"format\": 1, \"unprotected\": {},\n"
       " \"snapshot\": \"" SNAP "\", \"files\": [\n"
       " {\"csum\": \"" CSUM "\", \"name\": \"a.didx\", \"size\": 1},\n"
       " {\"csum\": \"" CSUM "\", \"name\": \"a.didx\", \"size\": 1}]}\n",
       CKL_ECORRUPT, "index.json:4:"},
      /* unknown key in a file entry */
      {"{\"created\": \"2026-11-21T15:07:43Z\", \"format\": 1, \"unprotected\": {},\n"
       " \"snapshot\": \"" SNAP "\", \"files\": [\n"
       " {\"csum\": \"" CSUM "\", \"name\": \"a.didx\", \"size\": 1, \"x\": 0}]}\n",
       CKL_ECORRUPT, "files[0].x: unknown key"},
      /* missing key */
      {"{\"created\": \"2026-11-21T15:07:43Z\", \"format\": 1, \"files\": [],\n"
       " \"snapshot\": \"" SNAP "\"}\n",
       CKL_ECORRUPT, "index.json:1:1: (top level): missing key \"unprotected\""},
      /* bad created */
      {"{\"created\": \"yesterday\", \"format\": 1, \"files\": [], \"unprotected\": {},\n"
       " \"snapshot\": \"" SNAP "\"}\n",
       CKL_ECORRUPT, "index.json:1:13: created:"},
      /* an embedded NUL in a string (\\u0000) is rejected by the parser */
      {"{\"created\": \"2026-11-21T15:07:43Z\\u0000\", \"format\": 1}\n", CKL_ECORRUPT,
       "index.json:1:"},
      {"[]\n", CKL_ECORRUPT, "expected an object"},
      {"", CKL_ECORRUPT, "index.json:"},
      {"{\"format\": 0}\n", CKL_ECORRUPT, "format: 0 is out of range"},
      {"{\"format\": 2, \"files\": 7}\n", CKL_EVERSION, "manifest format 2 is newer"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    write_raw(f, cases[i].text);
    ckl_test_log_clear();
    json_t *m = (json_t *)0x1;
    int rc = ckl_manifest_load(f->st, &f->sn, &m);
    if (rc != cases[i].rc) fail_msg("case %zu: got %s, log:\n%s", i, ckl_err_name(rc), ckl_test_log_text());
    assert_null(m);
    ckl_test_assert_logged(cases[i].log);
    /* update_manifest refuses the same file the same way, writing nothing. */
    assert_int_equal(ckl_update_manifest(f->st, &f->sn, set_notes, "x", NULL), cases[i].rc);
    size_t len;
    char *after = ckl_test_read_file(f->mpath, &len);
    assert_string_equal(after, cases[i].text);
    free(after);
  }
  /* Control: the valid text loads. */
  write_raw(f, VALID);
  json_t *m;
  assert_int_equal(ckl_manifest_load(f->st, &f->sn, &m), 0);
  json_decref(m);
}

static void assert_file_is(fixture *f, const char *text, ino_t ino) {
  size_t len;
  char *got = ckl_test_read_file(f->mpath, &len);
  assert_non_null(got);
  assert_int_equal(len, strlen(text));
  assert_memory_equal(got, text, len);
  free(got);
  struct stat sb;
  assert_int_equal(stat(f->mpath, &sb), 0);
  if (ino) assert_int_equal(sb.st_ino, ino);
}

static ino_t ino_of(const char *p) {
  struct stat sb;
  assert_int_equal(stat(p, &sb), 0);
  return sb.st_ino;
}

static void test_update(void **state) {
  fixture *f = *state;
  write_raw(f, VALID);
  assert_int_equal(ckl_update_manifest(f->st, &f->sn, set_notes, "hello", NULL), 0);
  const char *expect =
      "{\n  \"created\": \"2026-11-21T15:07:43Z\",\n  \"files\": [\n    {\n"
      "      \"csum\": \"" CSUM "\",\n      \"name\": \"root.didx\",\n      \"size\": 1234\n"
      "    }\n  ],\n  \"format\": 1,\n  \"snapshot\": \"" SNAP "\",\n"
      "  \"unprotected\": {\n    \"notes\": \"hello\"\n  }\n}\n";
  assert_file_is(f, expect, 0);
  ino_t ino = ino_of(f->mpath);

  /* Protected changes: refused, nothing written (same bytes, same inode). */
  ckl_manifest_update_fn bad[] = {touch_files, touch_size, add_top_key, change_created};
  const char *named[] = {"\"files\"", "\"files\"", "\"verify_state\"", "\"created\""};
  for (size_t i = 0; i < 4; i++) {
    ckl_test_log_clear();
    assert_int_equal(ckl_update_manifest(f->st, &f->sn, bad[i], NULL, NULL), CKL_EPROTECTED);
    assert_file_is(f, expect, ino);
    ckl_test_assert_logged(named[i]);
  }
  assert_int_equal(ckl_update_manifest(f->st, &f->sn, drop_unprotected, NULL, NULL), -EINVAL);
  assert_file_is(f, expect, ino);
  assert_int_equal(ckl_update_manifest(f->st, &f->sn, abort_update, NULL, NULL), -ECANCELED);
  assert_file_is(f, expect, ino);
  /* No change at all: not rewritten. */
  assert_int_equal(ckl_update_manifest(f->st, &f->sn, no_change, NULL, NULL), 0);
  assert_file_is(f, expect, ino);
  /* A failpoint between load and write: its error, nothing written. */
  assert_int_equal(ckl_failpoint_arm("update_manifest.after_load", "error(EIO)"), 0);
  assert_int_equal(ckl_update_manifest(f->st, &f->sn, set_notes, "lost", NULL), -EIO);
  assert_file_is(f, expect, ino);
  ckl_failpoint_disarm_all();

  /* Compact output on request. */
  ckl_manifest_update_opts co = {.flags = CKL_MANIFEST_COMPACT};
  assert_int_equal(ckl_update_manifest(f->st, &f->sn, set_notes, "bye", &co), 0);
  assert_file_is(f,
                 "{\"created\":\"2026-11-21T15:07:43Z\",\"files\":[{\"csum\":\"" CSUM
                 "\",\"name\":\"root.didx\",\"size\":1234}],\"format\":1,\"snapshot\":\"" SNAP
                 "\",\"unprotected\":{\"notes\":\"bye\"}}\n",
                 0);
  /* No lock file beside the manifest: only the lock namespace has one. */
  assert_int_equal(ckl_test_count_entries(f->snapdir, NULL), 1);
  char lockfile[BIG];
  snprintf(lockfile, sizeof lockfile, "%s/host/web/2026-11-21T15:07:43Z.manifest.lck",
           ckl_store_locks_root(f->st));
  assert_int_equal(access(lockfile, F_OK), 0);
}

static void test_update_missing(void **state) {
  fixture *f = *state;
  /* Snapshot exists, no manifest yet (backup in progress). */
  assert_int_equal(ckl_update_manifest(f->st, &f->sn, set_notes, "x", NULL), -ENOENT);
  assert_int_equal(access(f->mpath, F_OK), -1);
  /* No such snapshot: no lock litter either. */
  ckl_snapshot_name nope;
  assert_int_equal(ckl_snapshot_name_parse("host/nope/2026-11-21T15:07:43Z", &nope), 0);
  assert_int_equal(ckl_update_manifest(f->st, &nope, set_notes, "x", NULL), -ENOENT);
  char p[BIG];
  snprintf(p, sizeof p, "%s/host/nope", ckl_store_locks_root(f->st));
  assert_int_equal(access(p, F_OK), -1);
}

static void test_update_timeout(void **state) {
  fixture *f = *state;
  write_raw(f, VALID);
  ino_t ino = ino_of(f->mpath);
  ckl_path_lock held = {0};
  ckl_snap_lock_opts vo = {.operation = "verify"};
  assert_int_equal(ckl_manifest_lock(f->st, &f->sn, &held, &vo), 0);
  ckl_holder who = {0};
  ckl_manifest_update_opts o = {.timeout_ms = 50, .busy_holder = &who};
  ckl_test_log_clear();
  assert_int_equal(ckl_update_manifest(f->st, &f->sn, set_notes, "late", &o), CKL_ETIMEDOUT);
  assert_int_equal(who.known, 1);
  assert_string_equal(who.operation, "verify");
  assert_int_equal(who.pid, getpid());
  ckl_test_assert_logged(".manifest.lck: still held by verify");
  assert_file_is(f, VALID, ino);
  ckl_path_lock_release(&held);

  /* The store-wide default comes from the open options. */
  ckl_store *st2;
  ckl_store_open_opts oo = {.manifest_lock_timeout_ms = 40};
  assert_int_equal(ckl_store_open(f->path, &oo, &st2), 0);
  assert_int_equal(ckl_manifest_lock(f->st, &f->sn, &held, &vo), 0);
  ckl_test_log_clear();
  assert_int_equal(ckl_update_manifest(st2, &f->sn, set_notes, "late", NULL), CKL_ETIMEDOUT);
  ckl_test_assert_logged("after 40 ms");
  ckl_path_lock_release(&held);
  assert_int_equal(ckl_update_manifest(st2, &f->sn, set_notes, "in time", NULL), 0);
  ckl_store_close(st2);
}

typedef struct updater {
  fixture *f;
  const char *value;
  int64_t timeout_ms;
  int rc;
} updater;

static void *run_update(void *p) {
  updater *u = p;
  ckl_manifest_update_opts o = {.timeout_ms = u->timeout_ms};
  u->rc = ckl_update_manifest(u->f->st, &u->f->sn, set_notes, (void *)u->value, &o);
  return NULL;
}

/* The lock spans load..write: while A sits between its load and its
 * write, B cannot even load (it times out), and A's write then lands. */
static void test_lock_spans_load_to_write(void **state) {
  fixture *f = *state;
  write_raw(f, VALID);
  assert_int_equal(ckl_failpoint_arm("update_manifest.after_load", "1*pause"), 0);
  updater a = {.f = f, .value = "from A", .timeout_ms = 10000, .rc = 1};
  pthread_t ta;
  assert_int_equal(pthread_create(&ta, NULL, run_update, &a), 0);
  assert_int_equal(ckl_failpoint_wait_hits("update_manifest.after_load", 1, CKL_TEST_WAIT_MS), 0);
  updater b = {.f = f, .value = "from B", .timeout_ms = 30, .rc = 1};
  run_update(&b);
  assert_int_equal(b.rc, CKL_ETIMEDOUT);
  assert_int_equal(ckl_failpoint_hits("update_manifest.after_load"), 1); /* B never loaded */
  assert_int_equal(ckl_failpoint_release("update_manifest.after_load"), 1);
  assert_int_equal(pthread_join(ta, NULL), 0);
  assert_int_equal(a.rc, 0);
  json_t *m;
  assert_int_equal(ckl_manifest_load(f->st, &f->sn, &m), 0);
  assert_string_equal(
      json_string_value(json_object_get(json_object_get(m, "unprotected"), "notes")), "from A");
  json_decref(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_write_new_exact_bytes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_load_missing, setup, teardown),
      cmocka_unit_test_setup_teardown(test_load_corrupt, setup, teardown),
      cmocka_unit_test_setup_teardown(test_update, setup, teardown),
      cmocka_unit_test_setup_teardown(test_update_missing, setup, teardown),
      cmocka_unit_test_setup_teardown(test_update_timeout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_lock_spans_load_to_write, setup, teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

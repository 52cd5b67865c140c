/* Store create/open/close: the exact layout and configuration written,
 * every create and open error code, configuration errors reported with
 * file, line and column, half-created stores refused and finished, a
 * concurrent create refused, two handles of one store in one process. */
#include "testutil.h"

#include <limits.h>
#define BIG (2 * PATH_MAX) /* room for a path plus a suffix, without truncation warnings */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "datastore/store_internal.h"

typedef struct fixture {
  char *dir;   /* temp dir, fresh per test */
  char *store; /* dir/store, does not exist yet */
} fixture;

/* Creating a store makes 65,536 chunk directories, which takes seconds on
 * a busy disk: tests that only need *a* store share this one, created
 * once with default options (test_create_default_layout checks it, and
 * runs first). */
static char *base_dir, *base;

static int group_setup(void **state) {
  (void)state;
  base_dir = ckl_test_mkdtemp("store-base");
  base = ckl_test_path(base_dir, "store");
  return ckl_store_create(base, NULL) == 0 ? 0 : -1;
}

static int group_teardown(void **state) {
  (void)state;
  ckl_test_rmtree(base_dir);
  free(base);
  free(base_dir);
  return 0;
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  f->dir = ckl_test_mkdtemp("store");
  f->store = ckl_test_path(f->dir, "store");
  ckl_test_log_clear();
  ckl_test_log_capture();
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  ckl_log_set(NULL, NULL, CKL_LOG_ERROR);
  ckl_failpoint_disarm_all();
  ckl_test_rmtree(f->dir);
  free(f->store);
  free(f->dir);
  free(f);
  return 0;
}

static mode_t mode_of(const char *dir, const char *name, mode_t *type) {
  char *p = ckl_test_path(dir, name);
  struct stat st;
  assert_int_equal(lstat(p, &st), 0);
  free(p);
  *type = st.st_mode & S_IFMT;
  return st.st_mode & 07777;
}

static json_t *load_config(const char *store) {
  char *p = ckl_test_path(store, CKL_STORE_CONFIG_NAME);
  json_error_t err;
  json_t *j = json_load_file(p, JSON_REJECT_DUPLICATES, &err);
  free(p);
  assert_non_null(j);
  return j;
}

static void test_create_default_layout(void **state) {
  (void)state;
  mode_t type;
  assert_int_equal(mode_of(base, ".locks", &type), 0700);
  assert_int_equal(type, S_IFDIR);
  assert_int_equal(mode_of(base, ".state", &type), 0700);
  assert_int_equal(type, S_IFDIR);
  assert_int_equal(mode_of(base, ".trash", &type), 0700);
  assert_int_equal(type, S_IFDIR);
  assert_int_equal(mode_of(base, ".lock", &type), 0600);
  assert_int_equal(type, S_IFREG);
  mode_of(base, ".chunks", &type);
  assert_int_equal(type, S_IFDIR);
  char *chunks = ckl_test_path(base, ".chunks");
  assert_int_equal(ckl_test_count_entries(chunks, NULL), 65536);
  free(chunks);
  mode_of(base, CKL_STORE_CONFIG_NAME, &type);
  assert_int_equal(type, S_IFREG);
  /* Exactly these entries: no marker, no temp file left. */
  assert_int_equal(ckl_test_count_entries(base, NULL), 6);
  assert_int_equal(ckl_test_count_entries(base, ".creating"), 0);

  json_t *j = load_config(base);
  assert_int_equal(json_object_size(j), 7);
  assert_int_equal(json_integer_value(json_object_get(j, "format")), 1);
  const char *uuid = json_string_value(json_object_get(j, "uuid"));
  assert_non_null(uuid);
  assert_int_equal(strlen(uuid), 32);
  assert_int_equal(strspn(uuid, "0123456789abcdef"), 32);
  const char *created = json_string_value(json_object_get(j, "created"));
  assert_non_null(created);
  assert_int_equal(ckl_snapshot_time_parse(created, strlen(created), NULL), 0);
  json_t *chunk = json_object_get(j, "chunk");
  assert_int_equal(json_object_size(chunk), 2);
  assert_int_equal(json_integer_value(json_object_get(chunk, "average_size")), 1048576);
  assert_int_equal(json_integer_value(json_object_get(chunk, "compress_level")), 3);
  assert_string_equal(json_string_value(json_object_get(j, "sync")), "filesystem");
  json_t *gc = json_object_get(j, "gc");
  assert_int_equal(json_object_size(gc), 2);
  assert_int_equal(json_integer_value(json_object_get(gc, "atime_safety_s")), 87300);
  assert_int_equal(json_integer_value(json_object_get(gc, "margin_s")), 5);
  assert_true(json_is_null(json_object_get(j, "locks_dir")));

  ckl_store *st;
  assert_int_equal(ckl_store_open(base, NULL, &st), 0);
  const ckl_store_config *cfg = ckl_store_get_config(st);
  assert_string_equal(cfg->uuid, uuid);
  assert_string_equal(cfg->created, created);
  assert_int_equal(cfg->format, 1);
  assert_int_equal(cfg->chunk_average_size, 1048576);
  assert_int_equal(cfg->compress_level, 3);
  assert_int_equal(cfg->sync, CKL_SYNC_FILESYSTEM);
  assert_int_equal(cfg->gc_atime_safety_s, 87300);
  assert_int_equal(cfg->gc_margin_s, 5);
  assert_null(cfg->locks_dir);
  char real[BIG];
  assert_non_null(realpath(base, real));
  assert_string_equal(ckl_store_path(st), real);
  char *locks = ckl_test_path(real, ".locks");
  assert_string_equal(ckl_store_locks_root(st), locks);
  free(locks);
  assert_int_equal(st->manifest_lock_timeout_ms, CKL_MANIFEST_LOCK_TIMEOUT_MS);
  assert_int_equal(st->atomic_flags, 0);
  ckl_store_close(st);
  json_decref(j);
}


static void test_create_errors(void **state) {
  fixture *f = *state;
  struct stat sb;
  /* Bad options: refused before anything is created. */
  ckl_store_create_opts bad[] = {
      {.chunk_average_size = 100000},
      {.chunk_average_size = 32768},
      {.chunk_average_size = 8u << 20},
      {.compress_level = 23},
      {.compress_level = -2},
      {.set = CKL_STORE_SET_MARGIN, .gc_margin_s = -1},
      {.set = CKL_STORE_SET_ATIME_SAFETY, .gc_atime_safety_s = 31536001},
      {.sync = (ckl_sync_policy)7},
      {.locks_dir = "relative/locks"},
      {.locks_dir = "/trailing/"},
      {.locks_dir = "/bad\nname"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(ckl_store_create(f->store, &bad[i]), -EINVAL);
    assert_int_equal(stat(f->store, &sb), -1);
  }
  assert_int_equal(ckl_store_create(NULL, NULL), -EINVAL);

  /* Parent missing. */
  char *deep = ckl_test_path(f->dir, "no/such/store");
  assert_int_equal(ckl_store_create(deep, NULL), -ENOENT);
  free(deep);

  /* A regular file. */
  char *file = ckl_test_path(f->dir, "file");
  ckl_test_write_file(file, "x", 1);
  assert_int_equal(ckl_store_create(file, NULL), -ENOTDIR);
  free(file);

  /* A non-empty directory: refused, and left exactly as it was. */
  assert_int_equal(mkdir(f->store, 0755), 0);
  char *junk = ckl_test_path(f->store, "data.txt");
  ckl_test_write_file(junk, "keep", 4);
  assert_int_equal(ckl_store_create(f->store, NULL), -ENOTEMPTY);
  assert_int_equal(ckl_test_count_entries(f->store, NULL), 1);
  assert_int_equal(unlink(junk), 0);
  free(junk);
  /* A hidden file counts too. */
  junk = ckl_test_path(f->store, ".hidden");
  ckl_test_write_file(junk, "", 0);
  assert_int_equal(ckl_store_create(f->store, NULL), -ENOTEMPTY);
  assert_int_equal(unlink(junk), 0);
  free(junk);

  /* A store (an existing empty directory is accepted: the
   * crash suite creates in one). */
  ckl_test_log_clear();
  assert_int_equal(ckl_store_create(base, NULL), -EEXIST);
  ckl_test_assert_logged("already a store");
  assert_int_equal(ckl_test_count_entries(base, ".creating"), 0);
  assert_int_equal(ckl_test_count_entries(base, NULL), 6);
}

static void test_open_errors(void **state) {
  fixture *f = *state;
  ckl_store *st = (ckl_store *)0x1;
  assert_int_equal(ckl_store_open(f->store, NULL, &st), -ENOENT);
  assert_null(st);

  char *file = ckl_test_path(f->dir, "file");
  ckl_test_write_file(file, "x", 1);
  ckl_test_log_clear();
  assert_int_equal(ckl_store_open(file, NULL, &st), CKL_ENOTSTORE);
  ckl_test_assert_logged("not a directory");
  free(file);

  assert_int_equal(mkdir(f->store, 0755), 0);
  ckl_test_log_clear();
  assert_int_equal(ckl_store_open(f->store, NULL, &st), CKL_ENOTSTORE);
  ckl_test_assert_logged("no chunklock.json");

  /* chunklock.json that is a directory: not a regular file. */
  char *cfg = ckl_test_path(f->store, CKL_STORE_CONFIG_NAME);
  assert_int_equal(mkdir(cfg, 0755), 0);
  assert_int_equal(ckl_store_open(f->store, NULL, &st), CKL_ECORRUPT);
  assert_int_equal(rmdir(cfg), 0);
  /* A symlinked config is never followed. */
  assert_int_equal(symlink("/etc/hostname", cfg), 0);
  assert_int_equal(ckl_store_open(f->store, NULL, &st), -ELOOP);
  assert_int_equal(unlink(cfg), 0);
  free(cfg);

  ckl_store_open_opts oo = {.locks_dir = "not/absolute"};
  assert_int_equal(ckl_store_open(f->store, &oo, &st), -EINVAL);
  ckl_store_open_opts ot = {.manifest_lock_timeout_ms = -5};
  assert_int_equal(ckl_store_open(f->store, &ot, &st), -EINVAL);
  assert_int_equal(ckl_store_open(NULL, NULL, &st), -EINVAL);
}

/* Rewrite chunklock.json of a fresh store with text and open it. */
static int open_with_config(const char *text) {
  char *cfg = ckl_test_path(base, CKL_STORE_CONFIG_NAME);
  ckl_test_write_file(cfg, text, strlen(text));
  free(cfg);
  ckl_test_log_clear();
  ckl_store *st = NULL;
  int rc = ckl_store_open(base, NULL, &st);
  if (rc == 0) ckl_store_close(st);
  else assert_null(st);
  return rc;
}

#define CFG_HEAD "{\n  \"chunk\": {\"average_size\": 1048576, \"compress_level\": 3},\n"
#define CFG_CREATED "  \"created\": \"2026-11-21T15:07:43Z\",\n"
#define CFG_TAIL                                                                                 \
  "  \"locks_dir\": null,\n  \"sync\": \"filesystem\",\n"                                        \
  "  \"uuid\": \"0123456789abcdef0123456789abcdef\"\n}\n"

static void test_config_errors(void **state) {
  (void)state;
  char *cfg = ckl_test_path(base, CKL_STORE_CONFIG_NAME);
  size_t saved_len;
  char *saved = ckl_test_read_file(cfg, &saved_len);
  assert_non_null(saved);

  /* The control: this text is valid. */
  assert_int_equal(open_with_config(CFG_HEAD CFG_CREATED "  \"format\": 1,\n"
                                       "  \"gc\": {\"atime_safety_s\": 87300, \"margin_s\": 5},\n"
                                       CFG_TAIL),
                   0);

  /* Wrong type: the position of the bad value, not of the document. */
  assert_int_equal(open_with_config(CFG_HEAD CFG_CREATED "  \"format\": 1,\n"
                                       "  \"gc\": {\"atime_safety_s\": 87300, "
                                       "\"margin_s\": \"5\"},\n"
                                       CFG_TAIL),
                   CKL_ECORRUPT);
  ckl_test_assert_logged("chunklock.json:5:47: gc.margin_s: expected an integer");

  /* Out of range, positioned too. */
  assert_int_equal(open_with_config("{\n  \"chunk\": {\"average_size\": 8388608, "
                                       "\"compress_level\": 3},\n" CFG_CREATED
                                       "  \"format\": 1,\n"
                                       "  \"gc\": {\"atime_safety_s\": 87300, \"margin_s\": 5},\n"
                                       CFG_TAIL),
                   CKL_ECORRUPT);
  ckl_test_assert_logged("chunklock.json:2:29: chunk.average_size: 8388608 is out of range");
  assert_int_equal(open_with_config("{\n  \"chunk\": {\"average_size\": 1048575, "
                                       "\"compress_level\": 3},\n" CFG_CREATED
                                       "  \"format\": 1,\n"
                                       "  \"gc\": {\"atime_safety_s\": 87300, \"margin_s\": 5},\n"
                                       CFG_TAIL),
                   CKL_ECORRUPT);
  ckl_test_assert_logged("chunklock.json:2:29: chunk.average_size: 1048575 is not a power of two");

  /* Malformed JSON: jansson's own position. */
  assert_int_equal(open_with_config(CFG_HEAD CFG_CREATED "  \"format\": 1\n"
                                       "  \"gc\": {\"atime_safety_s\": 87300, \"margin_s\": 5},\n"
                                       CFG_TAIL),
                   CKL_ECORRUPT);
  ckl_test_assert_logged("chunklock.json:5:");

  /* Duplicate key. */
  assert_int_equal(open_with_config(CFG_HEAD CFG_CREATED "  \"format\": 1,\n"
                                       "  \"gc\": {\"atime_safety_s\": 87300, \"margin_s\": 5},\n"
                                       "  \"format\": 1,\n" CFG_TAIL),
                   CKL_ECORRUPT);
  ckl_test_assert_logged("chunklock.json:6:");
  ckl_test_assert_logged("duplicate");

  /* Unknown key (a typo must not be ignored). */
  assert_int_equal(open_with_config(CFG_HEAD CFG_CREATED "  \"format\": 1,\n"
                                       "  \"gc\": {\"atime_safety_s\": 87300, \"margin_s\": 5},\n"
                                       "  \"synk\": \"none\",\n" CFG_TAIL),
                   CKL_ECORRUPT);
  ckl_test_assert_logged("chunklock.json:6:11: synk: unknown key");

  /* Missing key: reported at its object. */
  assert_int_equal(open_with_config(CFG_HEAD CFG_CREATED "  \"format\": 1,\n"
                                       "  \"gc\": {\"atime_safety_s\": 87300},\n" CFG_TAIL),
                   CKL_ECORRUPT);
  ckl_test_assert_logged("chunklock.json:5:9: gc: missing key \"margin_s\"");

  /* Bad values of the right type. */
  assert_int_equal(open_with_config(CFG_HEAD "  \"created\": \"2026-02-30T00:00:00Z\",\n"
                                                "  \"format\": 1,\n"
                                                "  \"gc\": {\"atime_safety_s\": 87300, "
                                                "\"margin_s\": 5},\n" CFG_TAIL),
                   CKL_ECORRUPT);
  ckl_test_assert_logged("chunklock.json:3:14: created:");
  assert_int_equal(open_with_config(CFG_HEAD CFG_CREATED "  \"format\": 1,\n"
                                       "  \"gc\": {\"atime_safety_s\": 87300, \"margin_s\": 5},\n"
                                       "  \"locks_dir\": \"relative\",\n  \"sync\": \"none\",\n"
                                       "  \"uuid\": \"0123456789abcdef0123456789abcdef\"\n}\n"),
                   CKL_ECORRUPT);
  ckl_test_assert_logged("locks_dir: expected null or an absolute path");
  assert_int_equal(open_with_config(CFG_HEAD CFG_CREATED "  \"format\": 1,\n"
                                       "  \"gc\": {\"atime_safety_s\": 87300, \"margin_s\": 5},\n"
                                       "  \"locks_dir\": null,\n  \"sync\": \"sometimes\",\n"
                                       "  \"uuid\": \"0123456789abcdef0123456789abcdef\"\n}\n"),
                   CKL_ECORRUPT);
  ckl_test_assert_logged("sync: expected");
  assert_int_equal(open_with_config(CFG_HEAD CFG_CREATED "  \"format\": 1,\n"
                                       "  \"gc\": {\"atime_safety_s\": 87300, \"margin_s\": 5},\n"
                                       "  \"locks_dir\": null,\n  \"sync\": \"none\",\n"
                                       "  \"uuid\": \"0123456789ABCDEF0123456789abcdef\"\n}\n"),
                   CKL_ECORRUPT);
  ckl_test_assert_logged("uuid: expected 32 lowercase hex digits");

  /* Not an object at all; a real where an integer belongs. */
  assert_int_equal(open_with_config("[1, 2]\n"), CKL_ECORRUPT);
  assert_int_equal(open_with_config("{\"format\": 1.0}\n"), CKL_ECORRUPT);
  ckl_test_assert_logged("chunklock.json:1:12: format: expected an integer");
  assert_int_equal(open_with_config("{\"format\": 0}\n"), CKL_ECORRUPT);
  assert_int_equal(open_with_config(""), CKL_ECORRUPT);

  /* A newer format: refused as a version, whatever the rest looks like. */
  assert_int_equal(open_with_config("{\"format\": 2, \"whatever\": [1]}\n"), CKL_EVERSION);
  ckl_test_assert_logged("format 2 is newer");

  ckl_test_write_file(cfg, saved, saved_len);
  assert_int_equal(open_with_config(saved), 0);
  free(saved);
  free(cfg);
}

/* Finish the half-created store at path with every option set, and check
 * each lands in the configuration and the handle. */
static void create_with_options(fixture *f, const char *path) {
  char *locks = ckl_test_path(f->dir, "locks");
  ckl_store_create_opts o = {
      .set = CKL_STORE_SET_ATIME_SAFETY | CKL_STORE_SET_MARGIN,
      .sync = CKL_SYNC_NONE,
      .chunk_average_size = 65536,
      .compress_level = -1,
      .gc_atime_safety_s = 0,
      .gc_margin_s = 0,
      .locks_dir = locks};
  assert_int_equal(ckl_store_create(path, &o), 0);
  json_t *j = load_config(path);
  assert_string_equal(json_string_value(json_object_get(j, "sync")), "none");
  assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "chunk"), "average_size")),
                   65536);
  assert_int_equal(
      json_integer_value(json_object_get(json_object_get(j, "chunk"), "compress_level")), -1);
  assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "gc"), "atime_safety_s")),
                   0);
  assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "gc"), "margin_s")), 0);
  assert_string_equal(json_string_value(json_object_get(j, "locks_dir")), locks);

  ckl_store *st;
  assert_int_equal(ckl_store_open(path, NULL, &st), 0);
  const ckl_store_config *cfg = ckl_store_get_config(st);
  assert_int_equal(cfg->sync, CKL_SYNC_NONE);
  assert_int_equal(cfg->gc_atime_safety_s, 0);
  assert_int_equal(cfg->gc_margin_s, 0);
  assert_string_equal(cfg->locks_dir, locks);
  char expect[BIG];
  snprintf(expect, sizeof expect, "%s/%s", locks, json_string_value(json_object_get(j, "uuid")));
  assert_string_equal(ckl_store_locks_root(st), expect);
  assert_int_equal(st->atomic_flags, CKL_ATOMIC_NOSYNC);
  ckl_store_close(st);

  /* An open-time locks_dir overrides the configured one. */
  char *other = ckl_test_path(f->dir, "other");
  ckl_store_open_opts oo = {.locks_dir = other, .manifest_lock_timeout_ms = 50};
  assert_int_equal(ckl_store_open(path, &oo, &st), 0);
  snprintf(expect, sizeof expect, "%s/%s", other, json_string_value(json_object_get(j, "uuid")));
  assert_string_equal(ckl_store_locks_root(st), expect);
  assert_string_equal(ckl_store_get_config(st)->locks_dir, locks); /* config unchanged */
  assert_int_equal(st->manifest_lock_timeout_ms, 50);
  ckl_store_close(st);
  json_decref(j);
  free(other);
  free(locks);
}

/* A marker without a create holding it: open refuses, create finishes.
 * (A marker in an otherwise empty directory: tests/crash/test_store_crash.c.) */
static void test_half_created(void **state) {
  fixture *f = *state;
  char *marker = ckl_test_path(base, CKL_STORE_CREATING_NAME);
  ckl_test_write_file(marker, "", 0);
  ckl_store *st;
  ckl_test_log_clear();
  assert_int_equal(ckl_store_open(base, NULL, &st), CKL_EHALFCREATED);
  ckl_test_assert_logged("/store/.creating: the store's creation was interrupted");

  /* Finishing writes a new configuration (new uuid, every option as
   * given) and removes the marker. */
  json_t *before = load_config(base);
  create_with_options(f, base);
  assert_int_equal(access(marker, F_OK), -1);
  json_t *after = load_config(base);
  assert_string_not_equal(json_string_value(json_object_get(before, "uuid")),
                          json_string_value(json_object_get(after, "uuid")));
  assert_int_equal(ckl_test_count_entries(base, NULL), 6);
  json_decref(before);
  json_decref(after);
  free(marker);
}


/* A create that is running holds the marker: a second create is refused
 * with CKL_EBUSY and touches nothing, open answers CKL_EHALFCREATED. (That
 * a create then finishes such a directory from scratch is shown by the
 * crash suite, tests/crash/test_store_crash.c, whose first crash leaves
 * exactly this state.) */
static void test_create_busy(void **state) {
  fixture *f = *state;
  assert_int_equal(mkdir(f->store, 0755), 0);
  char *marker = ckl_test_path(f->store, CKL_STORE_CREATING_NAME);
  ckl_path_lock lk = {0};
  ckl_lock_opts lo = {.operation = "create"};
  assert_int_equal(ckl_path_lock_acquire(&lk, marker, CKL_LOCK_EXCLUSIVE, &lo), 0);
  ckl_test_log_clear();
  assert_int_equal(ckl_store_create(f->store, NULL), CKL_EBUSY);
  ckl_test_assert_logged("another create is running (create (pid");
  ckl_store *st;
  assert_int_equal(ckl_store_open(f->store, NULL, &st), CKL_EHALFCREATED);
  assert_int_equal(ckl_test_count_entries(f->store, NULL), 1);
  assert_int_equal(ckl_path_lock_release(&lk), 0);
  free(marker);
}

/* Failpoint errors at each step leave a half-created store. */
static void test_create_step_errors(void **state) {
  (void)state;
  /* Make the shared store half-created from before its configuration:
   * each step then runs for real (the chunk directories exist, making
   * them again is cheap). */
  char *cfg = ckl_test_path(base, CKL_STORE_CONFIG_NAME);
  char *marker = ckl_test_path(base, CKL_STORE_CREATING_NAME);
  assert_int_equal(unlink(cfg), 0);
  ckl_test_write_file(marker, "", 0);
  static const char *const points[] = {"store.create.after_marker", "store.create.after_chunks",
                                       "store.create.after_dirs", "store.create.after_config"};
  for (size_t i = 0; i < 4; i++) {
    assert_int_equal(ckl_failpoint_arm(points[i], "error(EIO)"), 0);
    assert_int_equal(ckl_store_create(base, NULL), -EIO);
    assert_int_equal(ckl_failpoint_hits(points[i]), 1);
    ckl_failpoint_disarm_all();
    ckl_store *st;
    assert_int_equal(ckl_store_open(base, NULL, &st), CKL_EHALFCREATED);
    assert_int_equal(access(marker, F_OK), 0);
    /* The configuration exists only once every directory does. */
    assert_int_equal(access(cfg, F_OK) == 0, i == 3);
  }
  assert_int_equal(ckl_store_create(base, NULL), 0);
  assert_int_equal(access(marker, F_OK), -1);
  ckl_store *st;
  assert_int_equal(ckl_store_open(base, NULL, &st), 0);
  ckl_store_close(st);
  free(marker);
  free(cfg);
}

static void test_two_handles(void **state) {
  (void)state;
  ckl_store *a, *b;
  assert_int_equal(ckl_store_open(base, NULL, &a), 0);
  assert_int_equal(ckl_store_open(base, NULL, &b), 0);
  ckl_proclock_guard g = {0};
  assert_int_equal(ckl_proclock_shared(a->proclock, &g, CKL_TRY, NULL), 0);
  ckl_store_close(b); /* must not drop a's guard */
  int shared = 0, excl = 0;
  ckl_proclock_counts(a->proclock, &shared, &excl);
  assert_int_equal(shared, 1);
  assert_int_equal(ckl_proclock_release(&g), 0);
  ckl_store_close(a);
  ckl_store_close(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_create_default_layout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_half_created, setup, teardown),
      cmocka_unit_test_setup_teardown(test_create_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_create_busy, setup, teardown),
      cmocka_unit_test_setup_teardown(test_create_step_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_two_handles, setup, teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

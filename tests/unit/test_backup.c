/* The backup session and the read API: a round trip is byte-exact; the
 * writer registers before any chunk and deregisters after the manifest;
 * one backup per group (CKL_EBUSY naming the holder, threads and
 * processes), backups of different groups run at once; every failure
 * (abort, base vanished, lease lost, open archive, failpoint) publishes
 * nothing and removes the partial snapshot through the forget path (into
 * the removed-during-GC set while a GC marks); the next backup of a group
 * removes what a dead backup abandoned. */
// ctest-labels: threads
#include "testutil.h"

#include "ops_util.h"

#include <sys/wait.h>

static int group_setup(void **state) { return ops_group_setup(state, "backup"); }

static void read_all(ckl_reader_archive *a, unsigned char *out, size_t len, size_t step) {
  for (size_t off = 0; off < len; off += step) {
    size_t want = len - off < step ? len - off : step;
    assert_int_equal(ckl_reader_archive_read(a, off, out + off, want), (ssize_t)want);
  }
}

static void test_round_trip(void **state) {
  ops_store *s = *state;
  ckl_group_name g = ops_group("host", "web");
  ckl_backup_opts o = {.time_s = OPS_T0};
  ckl_backup *b;
  assert_int_equal(ckl_backup_begin(s->st, &g, &o, &b), 0);
  assert_string_equal(ckl_backup_snapshot(b)->time, "2023-11-14T22:13:20Z");
  assert_null(ckl_backup_base(b));
  /* a dynamic archive with chunks of varying sizes */
  size_t sizes[] = {1, 4095, 4096, 70000, 13};
  size_t total = 0;
  for (size_t i = 0; i < 5; i++) total += sizes[i];
  unsigned char *dyn = malloc(total);
  ckl_backup_archive *a;
  assert_int_equal(ckl_backup_archive_open(b, "root.didx", 0, &a), 0);
  size_t off = 0;
  for (size_t i = 0; i < 5; i++) {
    ops_fill(dyn + off, sizes[i], 100 + (uint32_t)i);
    assert_int_equal(ckl_backup_archive_write_chunk(a, dyn + off, sizes[i], NULL), CKL_INSERT_NEW);
    off += sizes[i];
  }
  assert_int_equal(ckl_backup_archive_close(a), 0);
  /* a fixed archive: 3 full chunks of 4096 and a short last one; the
   * second chunk repeats the first (dedup within the backup) */
  unsigned char *fix = malloc(3 * 4096 + 100);
  ops_fill(fix, 4096, 7);
  memcpy(fix + 4096, fix, 4096);
  ops_fill(fix + 8192, 4096 + 100, 8);
  assert_int_equal(ckl_backup_archive_open(b, "disk.fidx", 4096, &a), 0);
  assert_int_equal(ckl_backup_archive_write_chunk(a, fix, 4096, NULL), CKL_INSERT_NEW);
  assert_int_equal(ckl_backup_archive_write_chunk(a, fix + 4096, 4096, NULL), CKL_INSERT_DEDUP);
  assert_int_equal(ckl_backup_archive_write_chunk(a, fix + 8192, 4096, NULL), CKL_INSERT_NEW);
  assert_int_equal(ckl_backup_archive_write_chunk(a, fix + 12288, 100, NULL), CKL_INSERT_NEW);
  assert_int_equal(ckl_backup_archive_close(a), 0);
  assert_int_equal(ckl_backup_finish(b), 0);

  ckl_snapshot_name n = ops_snap("host", "web", OPS_T0);
  json_t *m;
  assert_int_equal(ckl_manifest_load(s->st, &n, &m), 0);
  json_t *files = json_object_get(m, "files");
  assert_int_equal(json_array_size(files), 2);
  char *dir = ops_snap_dir(s, &n);
  for (size_t i = 0; i < 2; i++) {
    json_t *f = json_array_get(files, i);
    const char *name = json_string_value(json_object_get(f, "name"));
    char *p = ckl_test_path(dir, name);
    size_t len;
    char *raw = ckl_test_read_file(p, &len);
    ckl_digest d;
    ckl_digest_compute(raw, len, &d);
    char hex[65];
    ckl_digest_to_hex(&d, hex);
    assert_string_equal(json_string_value(json_object_get(f, "csum")), hex);
    assert_int_equal(json_integer_value(json_object_get(f, "size")), (json_int_t)len);
    free(raw);
    free(p);
  }
  assert_string_equal(json_string_value(json_object_get(json_array_get(files, 0), "name")),
                      "root.didx");
  json_decref(m);
  free(dir);
  assert_int_equal(ops_roster_count(s, "backup", NULL), 0);

  ckl_reader *r;
  assert_int_equal(ckl_reader_open(s->st, &n, NULL, &r), 0);
  assert_int_equal(ckl_reader_archive_count(r), 2);
  assert_string_equal(ckl_reader_archive_name(r, 1), "disk.fidx");
  assert_null(ckl_reader_archive_name(r, 2));
  assert_int_equal(ops_roster_count(s, "read", "host/web/2023-11-14T22:13:20Z"), 1);
  ckl_reader_archive *ra;
  assert_int_equal(ckl_reader_archive_open(r, "root.didx", &ra), 0);
  assert_int_equal(ckl_reader_archive_size(ra), total);
  unsigned char *back = calloc(1, total);
  read_all(ra, back, total, 777); /* reads that straddle chunk boundaries */
  assert_memory_equal(back, dyn, total);
  memset(back, 0, total);
  read_all(ra, back, total, total);
  assert_memory_equal(back, dyn, total);
  unsigned char two[2];
  assert_int_equal(ckl_reader_archive_read(ra, total - 1, two, 2), 1); /* short at the end */
  assert_int_equal(two[0], dyn[total - 1]);
  assert_int_equal(ckl_reader_archive_read(ra, total, two, 2), 0);
  ckl_reader_archive_close(ra);
  assert_int_equal(ckl_reader_archive_open(r, "disk.fidx", &ra), 0);
  assert_int_equal(ckl_reader_archive_size(ra), 3 * 4096 + 100);
  unsigned char *fback = calloc(1, 3 * 4096 + 100);
  read_all(ra, fback, 3 * 4096 + 100, 1000);
  assert_memory_equal(fback, fix, 3 * 4096 + 100);
  /* left open: close of the reader closes it */
  assert_int_equal(ckl_reader_archive_open(r, "nope.didx", &ra), -ENOENT);
  assert_int_equal(ckl_reader_close(r), 0);
  assert_int_equal(ops_roster_count(s, "read", NULL), 0);
  free(back);
  free(fback);
  free(dyn);
  free(fix);
}

static void test_reuse_and_argument_rules(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name first = ops_make_snapshot(s->st, "host", "a", 0, 1);
  ckl_group_name g = ops_group("host", "a");
  ckl_backup_opts o = {.time_s = OPS_T0 + 60, .flags = CKL_BACKUP_BASE_LATEST};
  ckl_backup *b;
  assert_int_equal(ckl_backup_begin(s->st, &g, &o, &b), 0);
  assert_non_null(ckl_backup_base(b));
  assert_string_equal(ckl_backup_base(b)->time, first.time);
  assert_int_equal(ops_roster_count(s, "backup-base", "host/a/2023-11-14T22:13:20Z"), 1);
  unsigned char buf[1000];
  ops_fill(buf, sizeof buf, 1); /* chunk 0 of the first snapshot */
  ckl_digest known, unknown;
  ckl_digest_compute(buf, sizeof buf, &known);
  ops_fill(buf, sizeof buf, 999);
  ckl_digest_compute(buf, sizeof buf, &unknown);
  ckl_backup_archive *a;
  assert_int_equal(ckl_backup_archive_open(b, "root.didx", 0, &a), 0);
  /* appending a chunk this writer neither inserted nor touched */
  assert_int_equal(ckl_backup_archive_append(a, &known, 1000), -EINVAL);
  assert_int_equal(ckl_backup_reuse_chunk(b, &known), 0);
  assert_int_equal(ckl_backup_archive_append(a, &known, 1000), 0);
  assert_int_equal(ckl_backup_reuse_chunk(b, &unknown), -ENOENT); /* must upload */
  assert_int_equal(ckl_backup_archive_append(a, &unknown, 1000), -EINVAL);
  assert_int_equal(ckl_backup_insert_chunk(b, &unknown, buf, sizeof buf), CKL_INSERT_NEW);
  assert_int_equal(ckl_backup_archive_append(a, &unknown, 1000), 0);
  assert_int_equal(ckl_backup_archive_append(a, &unknown, 0), -EINVAL);
  ckl_backup_archive *dup;
  assert_int_equal(ckl_backup_archive_open(b, "root.didx", 0, &dup), -EEXIST);
  assert_int_equal(ckl_backup_archive_open(b, "disk.fidx", 0, &dup), -EINVAL); /* no size */
  assert_int_equal(ckl_backup_archive_open(b, "notes.txt", 0, &dup), -EINVAL);
  assert_int_equal(ckl_backup_archive_open(b, ".x.didx", 0, &dup), -EINVAL);
  assert_int_equal(ckl_backup_archive_close(a), 0);
  assert_int_equal(ckl_backup_archive_open(b, "root.didx", 0, &dup), -EEXIST); /* closed too */
  assert_int_equal(ckl_backup_finish(b), 0);
  assert_int_equal(ops_roster_count(s, "backup-base", NULL), 0);

  /* a base in another group is refused */
  ckl_snapshot_name other = ops_snap("host", "b", OPS_T0);
  o = (ckl_backup_opts){.time_s = OPS_T0 + 120, .base = &other};
  assert_int_equal(ckl_backup_begin(s->st, &g, &o, &b), -EINVAL);
  /* a missing base is -ENOENT and leaves nothing behind */
  ckl_snapshot_name missing = ops_snap("host", "a", OPS_T0 + 30);
  o.base = &missing;
  assert_int_equal(ckl_backup_begin(s->st, &g, &o, &b), -ENOENT);
  ckl_snapshot_name would = ops_snap("host", "a", OPS_T0 + 120);
  assert_false(ops_snap_exists(s, &would));
  /* a time out of range */
  o = (ckl_backup_opts){.time_s = INT64_MAX};
  assert_int_equal(ckl_backup_begin(s->st, &g, &o, &b), -EINVAL);
  assert_null(b);
}

static void test_name_clash(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n = ops_make_snapshot(s->st, "host", "a", 0, 1);
  char *dir = ops_snap_dir(s, &n), *idx = ckl_test_path(dir, "index.json");
  struct stat before, after;
  assert_int_equal(stat(idx, &before), 0);
  ckl_group_name g = ops_group("host", "a");
  ckl_backup_opts o = {.time_s = OPS_T0};
  ckl_backup *b;
  assert_int_equal(ckl_backup_begin(s->st, &g, &o, &b), -EEXIST);
  assert_int_equal(stat(idx, &after), 0);
  assert_int_equal(before.st_ino, after.st_ino);
  assert_int_equal(ops_roster_count(s, "backup", NULL), 0);
  free(idx);
  free(dir);
}

static void test_group_busy_in_process(void **state) {
  ops_store *s = *state;
  ckl_group_name g = ops_group("host", "a");
  ckl_backup_opts o = {.time_s = OPS_T0};
  ckl_backup *b, *b2;
  assert_int_equal(ckl_backup_begin(s->st, &g, &o, &b), 0);
  ckl_holder who = {0};
  ckl_backup_opts o2 = {.time_s = OPS_T0 + 1, .busy_holder = &who};
  assert_int_equal(ckl_backup_begin(s->st, &g, &o2, &b2), CKL_EBUSY);
  assert_null(b2);
  assert_int_equal(who.known, 1);
  assert_string_equal(who.operation, "backup");
  assert_int_equal(who.pid, getpid());
  /* another group is not affected */
  ckl_group_name g2 = ops_group("host", "b");
  assert_int_equal(ckl_backup_begin(s->st, &g2, &o2, &b2), 0);
  ckl_backup_abort(b2);
  ckl_backup_abort(b);
  assert_int_equal(ops_trash_count(s), 0);
}

typedef struct child_arg {
  const char *path, *fpdir, *id;
  int64_t dt;
} child_arg;

/* A backup in a child, paused at backup.before_finish (pausefile). */
static int backup_child(void *p) {
  child_arg *c = p;
  ckl_store *st;
  if (ckl_store_open(c->path, NULL, &st) != 0) return 10;
  char spec[PATH_MAX];
  snprintf(spec, sizeof spec, "pausefile(%s)", c->fpdir);
  if (c->fpdir && ckl_failpoint_arm("backup.before_finish", spec) != 0) return 11;
  ckl_group_name g;
  char gn[64];
  snprintf(gn, sizeof gn, "host/%s", c->id);
  ckl_group_name_parse(gn, &g);
  ckl_backup_opts o = {.time_s = OPS_T0 + c->dt};
  ckl_backup *b;
  if (ckl_backup_begin(st, &g, &o, &b) != 0) return 12;
  if (ops_write_didx(b, "root.didx", 8, 3000, (uint32_t)c->dt, NULL) != 0) return 13;
  int rc = ckl_backup_finish(b);
  ckl_store_close(st);
  return rc == 0 ? 0 : 14;
}

static void test_group_busy_across_processes(void **state) {
  ops_store *s = *state;
  char *fp = ckl_test_mkdtemp("fp");
  child_arg c = {.path = s->path, .fpdir = fp, .id = "a", .dt = 0};
  pid_t pid = ckl_test_fork(backup_child, &c);
  ops_wait_pausefile(fp, "backup.before_finish");
  ckl_group_name g = ops_group("host", "a");
  ckl_holder who = {0};
  ckl_backup_opts o = {.time_s = OPS_T0 + 5, .busy_holder = &who};
  ckl_backup *b;
  assert_int_equal(ckl_backup_begin(s->st, &g, &o, &b), CKL_EBUSY);
  assert_int_equal(who.known, 1);
  assert_string_equal(who.operation, "backup");
  assert_int_equal(who.pid, pid);
  /* the child's writer record is in the roster, with its snapshot */
  assert_int_equal(ops_roster_count(s, "backup", "host/a/2023-11-14T22:13:20Z"), 1);
  ops_release_pausefile(fp, "backup.before_finish");
  assert_int_equal(ckl_test_wait(pid), 0);
  ckl_snapshot_name n = ops_snap("host", "a", OPS_T0);
  json_t *m;
  assert_int_equal(ckl_manifest_load(s->st, &n, &m), 0);
  json_decref(m);
  ckl_test_rmtree(fp);
  free(fp);
}

typedef struct thr_arg {
  ckl_store *st;
  int i, rc;
} thr_arg;

static void *backup_thread(void *p) {
  thr_arg *t = p;
  char gn[32];
  snprintf(gn, sizeof gn, "vm/%d", t->i);
  ckl_group_name g;
  ckl_group_name_parse(gn, &g);
  ckl_backup_opts o = {.time_s = OPS_T0};
  ckl_backup *b;
  if ((t->rc = ckl_backup_begin(t->st, &g, &o, &b)) != 0) return NULL;
  /* seeds overlap between threads: concurrent inserts of one chunk */
  if ((t->rc = ops_write_didx(b, "root.didx", 20, 2000, (uint32_t)(t->i % 2), NULL)) < 0) {
    ckl_backup_abort(b);
    return NULL;
  }
  t->rc = ckl_backup_finish(b);
  return NULL;
}

static void check_archive(ops_store *s, const ckl_snapshot_name *n, size_t nchunks, size_t csize,
                          uint32_t seed) {
  ckl_reader *r;
  assert_int_equal(ckl_reader_open(s->st, n, NULL, &r), 0);
  ckl_reader_archive *a;
  assert_int_equal(ckl_reader_archive_open(r, "root.didx", &a), 0);
  size_t len = nchunks * csize;
  unsigned char *want = malloc(len), *got = malloc(len);
  for (size_t k = 0; k < nchunks; k++) ops_fill(want + k * csize, csize, seed + (uint32_t)k);
  assert_int_equal(ckl_reader_archive_read(a, 0, got, len), (ssize_t)len);
  assert_memory_equal(got, want, len);
  free(want);
  free(got);
  assert_int_equal(ckl_reader_close(r), 0);
}

static void test_concurrent_groups_threads(void **state) {
  ops_store *s = *state;
  enum { N = 4 };
  pthread_t th[N];
  thr_arg ta[N];
  for (int i = 0; i < N; i++) {
    ta[i] = (thr_arg){.st = s->st, .i = i};
    assert_int_equal(pthread_create(&th[i], NULL, backup_thread, &ta[i]), 0);
  }
  for (int i = 0; i < N; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(ta[i].rc, 0);
  }
  for (int i = 0; i < N; i++) {
    char id[8];
    snprintf(id, sizeof id, "%d", i);
    ckl_snapshot_name n = ops_snap("vm", id, OPS_T0);
    check_archive(s, &n, 20, 2000, (uint32_t)(i % 2));
  }
}

static void test_concurrent_groups_processes(void **state) {
  ops_store *s = *state;
  child_arg c[3] = {{.path = s->path, .id = "p0", .dt = 0},
                    {.path = s->path, .id = "p1", .dt = 1},
                    {.path = s->path, .id = "p2", .dt = 2}};
  pid_t pid[3];
  for (int i = 0; i < 3; i++) pid[i] = ckl_test_fork(backup_child, &c[i]);
  for (int i = 0; i < 3; i++) assert_int_equal(ckl_test_wait(pid[i]), 0);
  for (int i = 0; i < 3; i++) {
    ckl_snapshot_name n = ops_snap("host", c[i].id, OPS_T0 + c[i].dt);
    check_archive(s, &n, 8, 3000, (uint32_t)c[i].dt);
  }
  assert_int_equal(ops_roster_count(s, "backup", NULL), 0);
}

/* Abort while a GC marks: the partial snapshot goes to .trash and into the
 * removed-during-GC set (the forget path), not away by rm -rf. */
static void test_abort_goes_through_forget(void **state) {
  ops_store *s = *state;
  ckl__state *gs;
  assert_int_equal(ckl__state_open(s->path, &gs), 0);
  char gc_token[33];
  assert_int_equal(ckl__random_token(gc_token), 0);
  ckl__gc_begin_info gi;
  assert_int_equal(ckl__state_gc_begin(gs, gc_token, 0, 0, &gi), 0);

  ckl_group_name g = ops_group("host", "a");
  ckl_backup_opts o = {.time_s = OPS_T0};
  ckl_backup *b;
  assert_int_equal(ckl_backup_begin(s->st, &g, &o, &b), 0);
  assert_int_equal(ops_write_didx(b, "root.didx", 2, 500, 3, NULL), 0);
  ckl_backup_abort(b);
  ckl_snapshot_name n = ops_snap("host", "a", OPS_T0);
  assert_false(ops_snap_exists(s, &n));
  assert_int_equal(ops_trash_count(s), 1);
  ckl__removed_list l;
  assert_int_equal(ckl__state_removed_list(gs, &l), 0);
  assert_int_equal(l.n, 1);
  assert_string_equal(l.v[0].snapshot_rel, "host/a/2023-11-14T22:13:20Z");
  assert_int_equal(strncmp(l.v[0].trash_rel, ".trash/host-a-2023-11-14T22:13:20Z-", 35), 0);
  /* the trash copy keeps its index for the GC to mark */
  char *t = ckl_test_path(s->path, l.v[0].trash_rel), *ti = ckl_test_path(t, "root.didx");
  assert_true(ops_exists(ti));
  free(ti);
  free(t);
  ckl__removed_list_free(&l);
  assert_int_equal(ops_roster_count(s, "backup", NULL), 0);
  assert_int_equal(ckl__state_gc_end(gs, gc_token), 0);

  /* without a GC the partial snapshot is deleted at once; the next
   * removal also purges the copy the ended GC no longer needs */
  assert_int_equal(ckl_backup_begin(s->st, &g, &o, &b), 0);
  assert_int_equal(ops_write_didx(b, "root.didx", 2, 500, 3, NULL), 0);
  ckl_backup_abort(b);
  assert_false(ops_snap_exists(s, &n));
  assert_int_equal(ops_trash_count(s), 1); /* abort does not purge */
  ckl_snapshot_name n2 = ops_make_snapshot(s->st, "host", "a", 10, 4);
  assert_int_equal(ckl_forget(s->st, &n2, NULL), CKL_FORGET_DELETED);
  assert_int_equal(ops_trash_count(s), 0);
  ckl__state_close(gs);
}

static void test_base_vanished(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name base = ops_make_snapshot(s->st, "host", "a", 0, 1);
  ckl_group_name g = ops_group("host", "a");
  ckl_backup_opts o = {.time_s = OPS_T0 + 60, .base = &base};
  ckl_backup *b;
  assert_int_equal(ckl_backup_begin(s->st, &g, &o, &b), 0);
  assert_int_equal(ops_write_didx(b, "root.didx", 2, 500, 9, NULL), 0);
  /* A forget cannot take the base (we hold it shared): something that
   * ignores the locks (an administrator, a second process with another
   * locks_dir) removes it. */
  assert_int_equal(ckl_forget(s->st, &base, NULL), CKL_EBUSY);
  char *bd = ops_snap_dir(s, &base), *away = ckl_test_path(s->dir, "away");
  assert_int_equal(rename(bd, away), 0);
  assert_int_equal(ckl_backup_finish(b), -ENOENT);
  ckl_snapshot_name n = ops_snap("host", "a", OPS_T0 + 60);
  assert_false(ops_snap_exists(s, &n));
  assert_int_equal(ops_trash_count(s), 0);
  assert_int_equal(ops_roster_count(s, "backup", NULL), 0);
  free(bd);
  free(away);
}

typedef struct finish_arg {
  ckl_backup *b;
  int rc;
} finish_arg;

static void *finish_thread(void *p) {
  finish_arg *a = p;
  a->rc = ckl_backup_finish(a->b);
  return NULL;
}

/* The coordination state is recreated under a running backup: its writer
 * record is gone, a GC may have started without seeing it. */
static void test_lease_lost(void **state) {
  ops_store *s = *state;
  ckl_group_name g = ops_group("host", "a");
  ckl_backup_opts o = {.time_s = OPS_T0};
  ckl_backup *b;
  assert_int_equal(ckl_backup_begin(s->st, &g, &o, &b), 0);
  assert_int_equal(ops_write_didx(b, "root.didx", 2, 500, 9, NULL), 0);
  char *sd = ckl_test_path(s->path, ".state"), *old = ckl_test_path(s->dir, "state.old");
  assert_int_equal(rename(sd, old), 0);
  assert_int_equal(ckl_backup_finish(b), CKL_ELOCKLOST);
  ckl_snapshot_name n = ops_snap("host", "a", OPS_T0);
  assert_false(ops_snap_exists(s, &n));
  assert_int_equal(ops_trash_count(s), 0);

  /* lost after the manifest was written, before the deregister: the
   * snapshot (never released to anybody) is withdrawn */
  ops_rmtree(old);
  assert_int_equal(ckl_backup_begin(s->st, &g, &o, &b), 0);
  assert_int_equal(ops_write_didx(b, "root.didx", 2, 500, 9, NULL), 0);
  assert_int_equal(ckl_failpoint_arm("backup.after_manifest", "pause"), 0);
  finish_arg fa = {.b = b};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, finish_thread, &fa), 0);
  assert_int_equal(ckl_failpoint_wait_hits("backup.after_manifest", 1, CKL_TEST_WAIT_MS), 0);
  char *dir = ops_snap_dir(s, &n), *mp = ckl_test_path(dir, "index.json");
  assert_true(ops_exists(mp));
  assert_int_equal(rename(sd, old), 0);
  ckl_failpoint_release("backup.after_manifest");
  pthread_join(th, NULL);
  assert_int_equal(fa.rc, CKL_ELOCKLOST);
  assert_false(ops_snap_exists(s, &n));
  assert_int_equal(ops_trash_count(s), 0);
  free(mp);
  free(dir);
  free(sd);
  free(old);
}

static void test_failures_publish_nothing(void **state) {
  ops_store *s = *state;
  ckl_group_name g = ops_group("host", "a");
  ckl_backup_opts o = {.time_s = OPS_T0};
  ckl_snapshot_name n = ops_snap("host", "a", OPS_T0);
  ckl_backup *b;
  /* an archive left open */
  assert_int_equal(ckl_backup_begin(s->st, &g, &o, &b), 0);
  ckl_backup_archive *a;
  assert_int_equal(ckl_backup_archive_open(b, "root.didx", 0, &a), 0);
  assert_int_equal(ckl_backup_archive_write_chunk(a, "x", 1, NULL), CKL_INSERT_NEW);
  assert_int_equal(ckl_backup_finish(b), -EINVAL);
  assert_false(ops_snap_exists(s, &n));
  /* a failpoint just before the manifest */
  assert_int_equal(ckl_failpoint_arm("backup.before_finish", "error(EIO)"), 0);
  assert_int_equal(ckl_backup_begin(s->st, &g, &o, &b), 0);
  assert_int_equal(ops_write_didx(b, "root.didx", 2, 100, 1, NULL), 0);
  assert_int_equal(ckl_backup_finish(b), -EIO);
  assert_false(ops_snap_exists(s, &n));
  assert_int_equal(ckl_failpoint_hits("backup.before_finish"), 1);
  ckl_failpoint_disarm_all();
  /* an archive whose index could not be written */
  assert_int_equal(ckl_failpoint_arm("index.write.before_commit", "error(ENOSPC)"), 0);
  assert_int_equal(ckl_backup_begin(s->st, &g, &o, &b), 0);
  assert_int_equal(ops_write_didx(b, "root.didx", 2, 100, 1, NULL), -ENOSPC);
  ckl_failpoint_disarm_all();
  assert_int_equal(ops_write_didx(b, "other.didx", 2, 100, 1, NULL), 0);
  assert_int_equal(ckl_backup_finish(b), -ENOSPC);
  assert_false(ops_snap_exists(s, &n));
  /* a failure inside begin after the directory exists */
  assert_int_equal(ckl_failpoint_arm("backup.after_mkdir", "error(EIO)"), 0);
  assert_int_equal(ckl_backup_begin(s->st, &g, &o, &b), -EIO);
  ckl_failpoint_disarm_all();
  assert_false(ops_snap_exists(s, &n));
  assert_int_equal(ops_trash_count(s), 0);
  assert_int_equal(ops_roster_count(s, "backup", NULL), 0);
  /* and the group is free again */
  ops_make_snapshot(s->st, "host", "a", 0, 1);
}

/* Register before any chunk, and before the first lock (so that a strict
 * GC of another process that meets the process locker can name the
 * backup): at backup.after_locks the record is there and the directory is
 * not; the same at backup.after_register. */
typedef struct begin_arg {
  ckl_store *st;
  int rc;
  ckl_backup *b;
} begin_arg;

static void *begin_thread(void *p) {
  begin_arg *a = p;
  ckl_group_name g = ops_group("host", "a");
  ckl_backup_opts o = {.time_s = OPS_T0};
  a->rc = ckl_backup_begin(a->st, &g, &o, &a->b);
  return NULL;
}

static void test_register_before_chunks(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n = ops_snap("host", "a", OPS_T0);
  assert_int_equal(ckl_failpoint_arm("backup.after_locks", "pause"), 0);
  assert_int_equal(ckl_failpoint_arm("backup.after_register", "pause"), 0);
  begin_arg a = {.st = s->st};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, begin_thread, &a), 0);
  assert_int_equal(ckl_failpoint_wait_hits("backup.after_locks", 1, CKL_TEST_WAIT_MS), 0);
  assert_int_equal(ops_roster_count(s, "backup", "host/a/2023-11-14T22:13:20Z"), 1);
  assert_false(ops_snap_exists(s, &n));
  ckl_failpoint_release("backup.after_locks");
  assert_int_equal(ckl_failpoint_wait_hits("backup.after_register", 1, CKL_TEST_WAIT_MS), 0);
  ops_roster_q q = {.op = "backup", .target = "host/a/2023-11-14T22:13:20Z"};
  assert_true(ckl_roster_list(s->path, ops_roster_cb, &q) >= 0);
  assert_int_equal(q.n, 1);
  assert_int_equal(q.flags & CKL_ROSTER_WRITER, CKL_ROSTER_WRITER);
  assert_int_equal(q.pid, getpid());
  assert_false(ops_snap_exists(s, &n));
  ckl_failpoint_release("backup.after_register");
  pthread_join(th, NULL);
  assert_int_equal(a.rc, 0);
  assert_true(ops_snap_exists(s, &n));
  int shared, excl;
  ckl_proclock_counts(s->st->proclock, &shared, &excl);
  assert_int_equal(shared, 1); /* the process locker, shared */
  assert_int_equal(ops_write_didx(a.b, "root.didx", 1, 10, 1, NULL), 0);
  assert_int_equal(ckl_backup_finish(a.b), 0);
  ckl_proclock_counts(s->st->proclock, &shared, &excl);
  assert_int_equal(shared, 0);
  assert_int_equal(ops_roster_count(s, "backup", NULL), 0);
}

static int crash_child(void *p) {
  child_arg *c = p;
  ckl_store *st;
  if (ckl_store_open(c->path, NULL, &st) != 0) return 10;
  if (ckl_failpoint_arm("backup.before_finish", "crash") != 0) return 11;
  ckl_group_name g;
  char gn[64];
  snprintf(gn, sizeof gn, "host/%s", c->id);
  ckl_group_name_parse(gn, &g);
  ckl_backup_opts o = {.time_s = OPS_T0 + c->dt};
  ckl_backup *b;
  if (ckl_backup_begin(st, &g, &o, &b) != 0) return 12;
  if (ops_write_didx(b, "root.didx", 2, 100, 5, NULL) != 0) return 13;
  ckl_backup_finish(b);
  return 14;
}

/* A backup that died leaves an abandoned snapshot; the next backup of
 * that group removes it (forget path), other groups' stay. */
static void test_abandoned_removed_by_next_backup(void **state) {
  ops_store *s = *state;
  child_arg c1 = {.path = s->path, .id = "a", .dt = 0}, c2 = {.path = s->path, .id = "b", .dt = 0};
  assert_int_equal(ckl_test_wait(ckl_test_fork(crash_child, &c1)), CKL_FAILPOINT_CRASH_STATUS);
  assert_int_equal(ckl_test_wait(ckl_test_fork(crash_child, &c2)), CKL_FAILPOINT_CRASH_STATUS);
  ckl_snapshot_name na = ops_snap("host", "a", OPS_T0), nb = ops_snap("host", "b", OPS_T0);
  assert_true(ops_snap_exists(s, &na));
  assert_true(ops_snap_exists(s, &nb));
  ckl_test_log_capture();
  ops_make_snapshot(s->st, "host", "a", 60, 6);
  assert_true(ckl_test_logged("removed abandoned snapshot host/a/2023-11-14T22:13:20Z"));
  assert_false(ops_snap_exists(s, &na));
  assert_true(ops_snap_exists(s, &nb));
  assert_int_equal(ops_trash_count(s), 0);
  char lock[PATH_MAX];
  snprintf(lock, sizeof lock, "%s/.locks/host/a/2023-11-14T22:13:20Z.lck", s->path);
  assert_false(ops_exists(lock));
  /* the dead writers' roster records were reaped */
  assert_int_equal(ops_roster_count(s, "backup", NULL), 0);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ops_reset, ops_reset)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_round_trip),
      T(test_reuse_and_argument_rules),
      T(test_name_clash),
      T(test_group_busy_in_process),
      T(test_group_busy_across_processes),
      T(test_concurrent_groups_threads),
      T(test_concurrent_groups_processes),
      T(test_abort_goes_through_forget),
      T(test_base_vanished),
      T(test_lease_lost),
      T(test_failures_publish_nothing),
      T(test_register_before_chunks),
      T(test_abandoned_removed_by_next_backup),
  };
  return cmocka_run_group_tests(tests, group_setup, ops_group_teardown);
}

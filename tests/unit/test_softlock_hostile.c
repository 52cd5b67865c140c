/* Soft lock against hostile input: the bounded marker parser (every field,
 * every truncation, random bytes), hostile marker files (huge, binary,
 * FIFO, directory, symlink, wrong owner, future mtime, junk names),
 * symlink attacks on markers and on the readers directory (refused, the
 * victim untouched), permissions, and our own marker being swapped or
 * chowned under a holder. */
#include "test_softlock_util.h"

#include <sys/types.h>

#define TTL_MS 90000

typedef struct fx {
  char *dir;
  char *path, *wpath, *spath, *rpath;
  char *victim; /* a file an attacker would like us to write */
  _Atomic int64_t wall_off, wall_base;
  tclock c;
} fx;

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  f->dir = ckl_test_mkdtemp("softhostile");
  f->path = ckl_test_path(f->dir, "lk");
  f->wpath = sl_sib(f->path, ".write");
  f->spath = sl_sib(f->path, ".state");
  f->rpath = sl_sib(f->path, ".readers");
  f->victim = ckl_test_path(f->dir, "victim");
  ckl_test_write_file(f->victim, "precious\n", 9);
  f->c.wall_off = &f->wall_off;
  f->c.wall_base = &f->wall_base;
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
  free(f->victim);
  free(f->dir);
  free(f);
  return 0;
}

static int try_take(fx *f, ckl_lock_mode mode, ckl_holder *who) {
  ckl_softlock lk = {0};
  ckl_softlock_opts o = sl_opts(&f->c, "node-a", TTL_MS);
  o.busy_holder = who;
  int rc = ckl_softlock_acquire(&lk, f->path, mode, &o);
  if (rc == 0) assert_int_equal(ckl_softlock_release(&lk), 0);
  return rc;
}

static void assert_victim_untouched(fx *f) {
  struct stat st;
  assert_int_equal(lstat(f->victim, &st), 0);
  assert_true(S_ISREG(st.st_mode));
  size_t len = 0;
  char *buf = ckl_test_read_file(f->victim, &len);
  assert_non_null(buf);
  assert_int_equal(len, 9);
  assert_memory_equal(buf, "precious\n", 9);
  free(buf);
}

static const char *TOKEN = "0123456789abcdef0123456789abcdef";

/* ---- the parser ---------------------------------------------------------------- */

static void test_parser_roundtrip_and_bounds(void **state) {
  (void)state;
  char buf[CKL__SOFTLOCK_MARKER_MAX + 64];
  int n = sl_marker_text(buf, sizeof buf, "node-a", 4242, TOKEN);
  assert_true(n > 0 && n < 300);
  ckl__softlock_marker m;
  assert_int_equal(ckl__softlock_marker_parse(buf, (size_t)n, &m), 0);
  assert_string_equal(m.token, TOKEN);
  assert_string_equal(m.host, "node-a");
  assert_int_equal(m.pid, 4242);
  assert_string_equal(m.op, "planted");
  /* Every proper prefix, and one byte more, is rejected. */
  for (int i = 0; i < n; i++)
    assert_int_equal(ckl__softlock_marker_parse(buf, (size_t)i, &m), CKL_ECORRUPT);
  buf[n] = '\n';
  assert_int_equal(ckl__softlock_marker_parse(buf, (size_t)n + 1, &m), CKL_ECORRUPT);
  /* Every single-byte change to NUL, 0xff or a space breaks it, except a
   * digit or letter for another of its class inside a value. */
  for (int i = 0; i < n; i++) {
    static const char subs[] = {'\0', '\xff', ' '};
    for (size_t k = 0; k < sizeof subs; k++) {
      char b2[CKL__SOFTLOCK_MARKER_MAX];
      memcpy(b2, buf, (size_t)n);
      if (b2[i] == subs[k]) continue;
      b2[i] = subs[k];
      assert_int_equal(ckl__softlock_marker_parse(b2, (size_t)n, &m), CKL_ECORRUPT);
    }
  }
  assert_int_equal(ckl__softlock_marker_parse(NULL, 0, &m), CKL_ECORRUPT);
  assert_int_equal(ckl__softlock_marker_parse(buf, 0, &m), CKL_ECORRUPT);
}

/* One field's value replaced: the marker must be rejected (or accepted). */
static int parse_with(const char *field, const char *value) {
  static const char *keys[] = {"token", "host", "boot", "pidns", "pid", "created", "op"};
  const char *vals[] = {TOKEN, "node-a", "6e1f0a22-0000-4000-8000-000000000000", "4026531836",
                        "4242", "1700000000000000000", "backup"};
  char buf[4096];
  size_t len = (size_t)snprintf(buf, sizeof buf, "%s\n", CKL__SOFTLOCK_MAGIC);
  for (size_t i = 0; i < CKL__ARRAY_SIZE(keys); i++) {
    const char *v = strcmp(keys[i], field) == 0 ? value : vals[i];
    len += (size_t)snprintf(buf + len, sizeof buf - len, "%s %s\n", keys[i], v);
  }
  ckl__softlock_marker m;
  return ckl__softlock_marker_parse(buf, len > sizeof buf ? sizeof buf : len, &m);
}

static void test_parser_fields(void **state) {
  (void)state;
  assert_int_equal(parse_with("none", ""), 0);
  static const struct {
    const char *field, *value;
    int ok;
  } cases[] = {
      {"token", "0123456789ABCDEF0123456789abcdef", 0}, /* upper case */
      {"token", "0123456789abcdef0123456789abcde", 0},  /* 31 */
      {"token", "0123456789abcdef0123456789abcdef0", 0},
      {"token", "0123456789abcdef0123456789abcdeg", 0},
      {"host", "", 0},
      {"host", "a b", 0},
      {"host", "h\x7f", 0},
      {"host", "h\xc3\xa9", 0},
      {"host", "123456789012345678901234567890123456789012345678901234567890123", 1},
      {"host", "1234567890123456789012345678901234567890123456789012345678901234", 0},
      {"boot", "-", 1},
      {"boot", "6E1F", 0},
      {"pidns", "0", 1},
      {"pidns", "18446744073709551615", 1},
      {"pidns", "18446744073709551616", 0},
      {"pidns", "-1", 0},
      {"pidns", "01", 0},
      {"pid", "0", 0},
      {"pid", "1", 1},
      {"pid", "4194304", 1},
      {"pid", "4194305", 0},
      {"pid", "99999999999999999999999", 0},
      {"pid", "+5", 0},
      {"pid", "5x", 0},
      {"pid", "", 0},
      {"created", "0", 0},
      {"created", "9223372036854775807", 1},
      {"created", "9223372036854775808", 0},
      {"op", "-", 1},
      {"op", "1234567890123456789012345678901", 1},
      {"op", "12345678901234567890123456789012", 0},
      {"op", "two words", 0},
  };
  for (size_t i = 0; i < CKL__ARRAY_SIZE(cases); i++) {
    int rc = parse_with(cases[i].field, cases[i].value);
    if (rc != (cases[i].ok ? 0 : CKL_ECORRUPT))
      fail_msg("%s=\"%s\": got %d", cases[i].field, cases[i].value, rc);
  }
  /* Reordered lines, a wrong magic, CRLF. */
  char buf[512];
  int n = sl_marker_text(buf, sizeof buf, "node-a", 1, TOKEN);
  ckl__softlock_marker m;
  char b2[512];
  memcpy(b2, buf, (size_t)n);
  b2[19] = '2'; /* "chunklock-softlock 2" */
  assert_int_equal(ckl__softlock_marker_parse(b2, (size_t)n, &m), CKL_ECORRUPT);
  char *nl = memchr(buf, '\n', (size_t)n);
  size_t at = (size_t)(nl - buf);
  memcpy(b2, buf, at);
  b2[at] = '\r';
  memcpy(b2 + at + 1, buf + at, (size_t)n - at);
  assert_int_equal(ckl__softlock_marker_parse(b2, (size_t)n + 1, &m), CKL_ECORRUPT);
}

static void test_parser_random_bytes(void **state) {
  (void)state;
  /* Random buffers, and random mutations of a valid marker: never a crash
   * (ASan watches), never an accepted marker with out-of-range fields. */
  char good[512];
  int n = sl_marker_text(good, sizeof good, "node-a", 77, TOKEN);
  uint64_t seed = 0x9e3779b97f4a7c15ULL;
  for (int iter = 0; iter < 20000; iter++) {
    unsigned char buf[CKL__SOFTLOCK_MARKER_MAX + 8];
    size_t len;
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    if (iter % 2) {
      len = (size_t)(seed >> 33) % sizeof buf;
      for (size_t i = 0; i < len; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        buf[i] = (unsigned char)(seed >> 56);
      }
    } else {
      len = (size_t)n;
      memcpy(buf, good, len);
      for (int k = 0; k < 3; k++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        buf[(seed >> 33) % len] = (unsigned char)(seed >> 56);
      }
    }
    ckl__softlock_marker m;
    if (ckl__softlock_marker_parse(buf, len, &m) == 0) {
      assert_true(m.pid >= 1 && m.pid <= CKL__SOFTLOCK_PID_MAX);
      assert_true(m.created_ns >= 1);
      assert_int_equal(strlen(m.token), CKL_TOKEN_HEX_LEN);
      assert_true(strlen(m.host) >= 1 && strlen(m.host) <= 63);
    }
  }
  assert_int_equal(ckl__softlock_marker_parse(good, CKL__SOFTLOCK_MARKER_MAX + 1, NULL),
                   CKL_ECORRUPT);
}

/* ---- hostile files at the marker names ---------------------------------------------- */

static void plant_bytes(const char *path, const void *data, size_t len) {
  ckl_test_write_file(path, data, len);
}

static void test_garbage_markers_count_as_held_until_ttl(void **state) {
  fx *f = *state;
  size_t big = 1 << 20;
  char *huge = malloc(big);
  char good[512];
  int n = sl_marker_text(good, sizeof good, "node-z", 1, TOKEN);
  memset(huge, 0, big);
  memcpy(huge, good, (size_t)n); /* a valid start does not make it valid */
  unsigned char bin[200];
  for (size_t i = 0; i < sizeof bin; i++) bin[i] = (unsigned char)(i * 37 + 11);
  struct {
    const void *data;
    size_t len;
  } cases[] = {{huge, big}, {bin, sizeof bin}, {"", 0}, {good, (size_t)n - 1}};
  for (size_t i = 0; i < CKL__ARRAY_SIZE(cases); i++) {
    atomic_store(&f->wall_off, 0);
    plant_bytes(f->wpath, cases[i].data, cases[i].len);
    ckl_holder who;
    assert_int_equal(try_take(f, CKL_LOCK_SHARED, &who), CKL_EBUSY);
    assert_int_equal(who.known, 0); /* nobody is named from garbage */
    assert_string_equal(who.target, f->wpath);
    assert_int_equal(try_take(f, CKL_LOCK_EXCLUSIVE, &who), CKL_EBUSY);
    assert_int_equal(who.known, 0);
    atomic_store(&f->wall_off, (STALE_MS(TTL_MS) + 1000) * MS);
    assert_int_equal(try_take(f, CKL_LOCK_SHARED, NULL), 0);
    assert_false(sl_exists(f->wpath));
    assert_int_equal(ckl_test_count_entries(f->rpath, NULL), 0);
  }
  free(huge);
}

static void test_non_files_evicted_at_once(void **state) {
  fx *f = *state;
  /* A FIFO must neither hang us nor block: nobody's marker is a FIFO. */
  assert_int_equal(mkfifo(f->wpath, 0600), 0);
  assert_int_equal(try_take(f, CKL_LOCK_SHARED, NULL), 0);
  assert_false(sl_exists(f->wpath));
  assert_int_equal(mkdir(f->wpath, 0700), 0);
  assert_int_equal(try_take(f, CKL_LOCK_EXCLUSIVE, NULL), 0);
  assert_false(sl_exists(f->wpath));
  assert_int_equal(mkfifo(f->spath, 0600), 0); /* the state mutex too */
  assert_int_equal(try_take(f, CKL_LOCK_EXCLUSIVE, NULL), 0);
  assert_false(sl_exists(f->spath));
  /* In the readers directory: a FIFO and a directory named like readers. */
  char *r1 = sl_sib(f->rpath, "/r.00000000000000000000000000000001");
  char *r2 = sl_sib(f->rpath, "/r.00000000000000000000000000000002");
  assert_int_equal(mkfifo(r1, 0600), 0);
  assert_int_equal(mkdir(r2, 0700), 0);
  assert_int_equal(try_take(f, CKL_LOCK_EXCLUSIVE, NULL), 0);
  assert_false(sl_exists(r1));
  assert_false(sl_exists(r2));
  assert_int_equal(ckl_test_count_entries(f->rpath, NULL), 0);
  free(r1);
  free(r2);
}

static void test_symlink_attacks_refused_victim_untouched(void **state) {
  fx *f = *state;
  char *dangling = ckl_test_path(f->dir, "created-by-attack");
  /* Marker names pre-created as symlinks to a victim, and dangling ones
   * to where a file would be created if we followed them. */
  assert_int_equal(symlink(f->victim, f->wpath), 0);
  assert_int_equal(symlink(dangling, f->spath), 0);
  assert_int_equal(try_take(f, CKL_LOCK_SHARED, NULL), 0);
  assert_false(sl_exists(f->wpath));
  assert_false(sl_exists(f->spath));
  assert_victim_untouched(f);
  assert_false(sl_exists(dangling));
  assert_int_equal(symlink(f->victim, f->wpath), 0);
  assert_int_equal(try_take(f, CKL_LOCK_EXCLUSIVE, NULL), 0);
  assert_victim_untouched(f);
  char *rl = sl_sib(f->rpath, "/r.0123456789abcdef0123456789abcdef");
  assert_int_equal(symlink(f->victim, rl), 0);
  assert_int_equal(try_take(f, CKL_LOCK_EXCLUSIVE, NULL), 0);
  assert_false(sl_exists(rl));
  assert_victim_untouched(f);
  free(rl);
  assert_int_equal(ckl_test_count_entries(f->rpath, NULL), 0);

  /* The readers directory as a symlink to a victim directory: refused,
   * nothing created in the victim. */
  char *vdir = ckl_test_path(f->dir, "victim-dir");
  assert_int_equal(mkdir(vdir, 0755), 0);
  char *p2 = ckl_test_path(f->dir, "lk2");
  char *r2 = sl_sib(p2, ".readers");
  assert_int_equal(symlink(vdir, r2), 0);
  ckl_softlock lk = {0};
  ckl_softlock_opts o = sl_opts(&f->c, "node-a", TTL_MS);
  assert_int_equal(ckl_softlock_acquire(&lk, p2, CKL_LOCK_SHARED, &o), -ELOOP);
  assert_int_equal(ckl_softlock_acquire(&lk, p2, CKL_LOCK_EXCLUSIVE, &o), -ELOOP);
  assert_int_equal(ckl_test_count_entries(vdir, NULL), 0);
  struct stat st;
  assert_int_equal(stat(vdir, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0755);
  assert_int_equal(unlink(r2), 0);
  assert_int_equal(symlink(f->victim, r2), 0); /* to a file */
  assert_int_equal(ckl_softlock_acquire(&lk, p2, CKL_LOCK_SHARED, &o), -ELOOP);
  assert_victim_untouched(f);
  assert_int_equal(unlink(r2), 0);
  ckl_test_write_file(r2, "x", 1);
  assert_int_equal(ckl_softlock_acquire(&lk, p2, CKL_LOCK_SHARED, &o), -ENOTDIR);
  assert_null(lk.hold);
  free(vdir);
  free(p2);
  free(r2);
  free(dangling);
}

static void test_permissions(void **state) {
  fx *f = *state;
  /* A umask that would leave us a 0500 directory: we still get 0700. */
  mode_t old = umask(0277);
  ckl_softlock r = {0};
  ckl_softlock_opts o = sl_opts(&f->c, "node-a", TTL_MS);
  int rc = ckl_softlock_acquire(&r, f->path, CKL_LOCK_SHARED, &o);
  umask(old);
  assert_int_equal(rc, 0);
  struct stat st;
  assert_int_equal(lstat(f->rpath, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0700);
  ckl_holder me;
  assert_int_equal(ckl_softlock_info(&r, &me), 0);
  assert_int_equal(lstat(me.target, &st), 0);
  assert_int_equal(st.st_mode & 077, 0); /* never readable by others */
  assert_int_equal(st.st_uid, geteuid());
  assert_int_equal(ckl_softlock_release(&r), 0);

  /* A readers directory open to others, or someone else's: refused. */
  assert_int_equal(chmod(f->rpath, 0755), 0);
  assert_int_equal(try_take(f, CKL_LOCK_SHARED, NULL), -EPERM);
  assert_int_equal(try_take(f, CKL_LOCK_EXCLUSIVE, NULL), -EPERM);
  assert_false(sl_exists(f->wpath));
  assert_false(sl_exists(f->spath));
  assert_int_equal(chmod(f->rpath, 0700), 0);
  assert_int_equal(try_take(f, CKL_LOCK_SHARED, NULL), 0);
  if (geteuid() == 0) {
    assert_int_equal(chown(f->rpath, 65534, 65534), 0);
    assert_int_equal(try_take(f, CKL_LOCK_SHARED, NULL), -EPERM);
    assert_int_equal(chown(f->rpath, 0, 0), 0);
  } else {
    /* A directory we may not write: cannot create markers. */
    assert_int_equal(chmod(f->dir, 0500), 0);
    char *p2 = ckl_test_path(f->dir, "lk2");
    ckl_softlock lk = {0};
    assert_int_equal(ckl_softlock_acquire(&lk, p2, CKL_LOCK_SHARED, &o), -EACCES);
    assert_int_equal(chmod(f->dir, 0700), 0);
    free(p2);
  }
  assert_int_equal(try_take(f, CKL_LOCK_EXCLUSIVE, NULL), 0);
}

static void test_wrong_owner_and_dead_pid(void **state) {
  fx *f = *state;
  char buf[512];
  pid_t dead = sl_dead_pid();
  char hostname[64];
  ckl__strlcpy(hostname, ckl__hostname(), sizeof hostname);
  int n = sl_marker_text(buf, sizeof buf, hostname, dead, TOKEN);
  /* Ours, same host/boot/pid namespace, dead pid: evicted at once. */
  plant_bytes(f->wpath, buf, (size_t)n);
  {
    ckl_softlock lk = {0};
    ckl_softlock_opts o = sl_opts(&f->c, NULL, TTL_MS); /* our real host id */
    assert_int_equal(ckl_softlock_acquire(&lk, f->path, CKL_LOCK_SHARED, &o), 0);
    assert_int_equal(ckl_softlock_release(&lk), 0);
  }
  assert_false(sl_exists(f->wpath));
  /* Same content, another boot id: kill() cannot speak for it. */
  char other[512];
  memcpy(other, buf, (size_t)n);
  char *boot = strstr(other, "\nboot ") + 6;
  boot[0] = boot[0] == 'a' ? 'b' : 'a';
  plant_bytes(f->wpath, other, (size_t)n);
  ckl_softlock lk = {0};
  ckl_softlock_opts o = sl_opts(&f->c, NULL, TTL_MS);
  ckl_holder who;
  o.busy_holder = &who;
  assert_int_equal(ckl_softlock_acquire(&lk, f->path, CKL_LOCK_SHARED, &o), CKL_EBUSY);
  assert_int_equal(who.known, 1);
  assert_int_equal(who.pid, dead);
  assert_string_equal(who.operation, "planted");
  assert_int_equal(unlink(f->wpath), 0);
  if (geteuid() != 0) {
    skip();
    return;
  }
  /* Someone else's file claiming to be our dead process: not trusted, so
   * neither named nor evicted at once; only the TTL frees it. */
  plant_bytes(f->wpath, buf, (size_t)n);
  assert_int_equal(chown(f->wpath, 65534, 65534), 0);
  /* 1 s on either side of the TTL: freeze the clock and date the planted
   * marker by it, or a loaded machine's real time crosses the TTL between
   * the plant and the "still busy" check. */
  sl_freeze_wall(&f->wall_base);
  sl_stamp(f->wpath, sl_wall(&f->wall_base, &f->wall_off));
  assert_int_equal(ckl_softlock_acquire(&lk, f->path, CKL_LOCK_SHARED, &o), CKL_EBUSY);
  assert_int_equal(who.known, 0);
  atomic_store(&f->wall_off, (STALE_MS(TTL_MS) - 1000) * MS);
  assert_int_equal(ckl_softlock_acquire(&lk, f->path, CKL_LOCK_SHARED, &o), CKL_EBUSY);
  atomic_store(&f->wall_off, (STALE_MS(TTL_MS) + 1000) * MS);
  assert_int_equal(ckl_softlock_acquire(&lk, f->path, CKL_LOCK_SHARED, &o), 0);
  assert_false(sl_exists(f->wpath));
  assert_int_equal(ckl_softlock_release(&lk), 0);
}

static void test_future_mtime_and_junk_names(void **state) {
  fx *f = *state;
  char buf[512];
  int n = sl_marker_text(buf, sizeof buf, "node-z", 1, TOKEN);
  plant_bytes(f->wpath, buf, (size_t)n);
  /* Stamped a year ahead: would never age; beyond any skew, so stale. */
  int64_t fut = ckl__now_realtime_ns() + 365LL * 86400 * SEC;
  struct timespec ts[2] = {{.tv_sec = fut / SEC, .tv_nsec = fut % SEC}};
  ts[1] = ts[0];
  assert_int_equal(utimensat(AT_FDCWD, f->wpath, ts, 0), 0);
  assert_int_equal(try_take(f, CKL_LOCK_SHARED, NULL), 0);
  assert_false(sl_exists(f->wpath));
  /* Names that are not reader markers are not ours to judge or remove. */
  char *j1 = sl_sib(f->rpath, "/junk");
  char *j2 = sl_sib(f->rpath, "/.nfs000000000001");
  char *j3 = sl_sib(f->rpath, "/r.XYZ");
  ckl_test_write_file(j1, "x", 1);
  ckl_test_write_file(j2, "x", 1);
  ckl_test_write_file(j3, "x", 1);
  assert_int_equal(try_take(f, CKL_LOCK_EXCLUSIVE, NULL), 0);
  assert_true(sl_exists(j1) && sl_exists(j2) && sl_exists(j3));
  free(j1);
  free(j2);
  free(j3);
}

static void test_own_marker_swapped_or_chowned(void **state) {
  fx *f = *state;
  ckl_softlock w = {0};
  ckl_softlock_opts o = sl_opts(&f->c, "node-a", TTL_MS);
  assert_int_equal(ckl_softlock_acquire(&w, f->path, CKL_LOCK_EXCLUSIVE, &o), 0);
  /* Another marker (another token) put at the name: not ours. */
  size_t len = 0;
  char *buf = ckl_test_read_file(f->wpath, &len);
  char *tmp = ckl_test_path(f->dir, "copy");
  char other[512];
  int n = sl_marker_text(other, sizeof other, "node-a", getpid(), TOKEN);
  ckl_test_write_file(tmp, other, (size_t)n);
  assert_int_equal(rename(tmp, f->wpath), 0);
  assert_int_equal(ckl_softlock_refresh(&w), CKL_ELOCKLOST);
  assert_int_equal(ckl_softlock_release(&w), CKL_ELOCKLOST);
  assert_true(sl_exists(f->wpath)); /* not ours: left alone */
  assert_int_equal(unlink(f->wpath), 0);
  /* Replaced by a symlink to our own marker's copy: refused too. */
  assert_int_equal(ckl_softlock_acquire(&w, f->path, CKL_LOCK_EXCLUSIVE, &o), 0);
  ckl_test_write_file(tmp, buf, len);
  assert_int_equal(unlink(f->wpath), 0);
  assert_int_equal(symlink(tmp, f->wpath), 0);
  assert_int_equal(ckl_softlock_refresh(&w), CKL_ELOCKLOST);
  assert_int_equal(ckl_softlock_release(&w), CKL_ELOCKLOST);
  assert_int_equal(unlink(f->wpath), 0);
  free(buf);
  free(tmp);
  if (geteuid() != 0) return;
  /* Our own marker given to another uid: no longer trusted as ours. */
  assert_int_equal(ckl_softlock_acquire(&w, f->path, CKL_LOCK_EXCLUSIVE, &o), 0);
  assert_int_equal(chown(f->wpath, 65534, 65534), 0);
  assert_int_equal(ckl_softlock_refresh(&w), CKL_ELOCKLOST);
  assert_int_equal(ckl_softlock_release(&w), CKL_ELOCKLOST);
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_parser_roundtrip_and_bounds),
      T(test_parser_fields),
      T(test_parser_random_bytes),
      T(test_garbage_markers_count_as_held_until_ttl),
      T(test_non_files_evicted_at_once),
      T(test_symlink_attacks_refused_victim_untouched),
      T(test_permissions),
      T(test_wrong_owner_and_dead_pid),
      T(test_future_mtime_and_junk_names),
      T(test_own_marker_swapped_or_chowned),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Path locks: exclusion between structs, threads and processes, holder
 * records, lock-then-verify against unlinked/replaced files (forced with
 * failpoints), unlink, verify, convert, probe, bad input, lock order. */
// ctest-labels: threads
#include "testutil.h"

#include <signal.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/internal.h"
#include "locks/locks_internal.h"

typedef struct fx {
  char *dir;
  char *path; /* dir/a.lck */
} fx;

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  f->dir = ckl_test_mkdtemp("flock");
  f->path = ckl_test_path(f->dir, "a.lck");
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  ckl_failpoint_disarm_all();
  atomic_store(&ckl__holder_lookup, NULL);
  ckl_test_rmtree(f->dir);
  free(f->path);
  free(f->dir);
  free(f);
  return 0;
}

static ino_t ino_of(const char *path) {
  struct stat st;
  assert_int_equal(lstat(path, &st), 0);
  return st.st_ino;
}

static int try_lock(const char *path, ckl_lock_mode mode, int64_t timeout, ckl_holder *who) {
  ckl_path_lock lk = {0};
  ckl_lock_opts o = {.timeout_ms = timeout, .busy_holder = who};
  int rc = ckl_path_lock_acquire(&lk, path, mode, &o);
  if (rc == 0) assert_int_equal(ckl_path_lock_release(&lk), 0);
  return rc;
}

/* Replace the file at path by a new one (new inode); returns the new inode. */
static ino_t replace_file(const char *path) {
  assert_int_equal(unlink(path), 0);
  int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  assert_true(fd >= 0);
  close(fd);
  return ino_of(path);
}

/* ---- basics and holder records ---------------------------------------- */

static void test_exclusive_names_holder(void **state) {
  fx *f = *state;
  ckl_path_lock lk = {0};
  ckl_lock_opts o = {.timeout_ms = CKL_TRY, .operation = "forget"};
  assert_int_equal(ckl_path_lock_acquire(&lk, f->path, CKL_LOCK_EXCLUSIVE, &o), 0);
  assert_int_equal(lk.held, 1);
  assert_int_equal(lk.mode, CKL_LOCK_EXCLUSIVE);
  struct stat st;
  assert_int_equal(lstat(f->path, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0600);
  assert_true(lk.ino == st.st_ino && lk.dev == st.st_dev);
  assert_int_equal(st.st_size, CKL__HOLDER_REC_SIZE);

  /* Another struct in the same thread is another owner: excluded. */
  ckl_holder who;
  assert_int_equal(try_lock(f->path, CKL_LOCK_EXCLUSIVE, CKL_TRY, &who), CKL_EBUSY);
  assert_int_equal(who.known, 1);
  assert_int_equal(who.pid, getpid());
  assert_int_equal(who.tid, ckl__gettid());
  assert_string_equal(who.operation, "forget");
  assert_string_equal(who.token, lk.token);
  assert_string_equal(who.host, ckl__hostname());
  assert_int_equal(who.since_ns, lk.acquired_ns);
  assert_string_equal(who.target, f->path);
  assert_int_equal(try_lock(f->path, CKL_LOCK_SHARED, CKL_TRY, &who), CKL_EBUSY);
  assert_int_equal(who.known, 1);
  assert_int_equal(try_lock(f->path, CKL_LOCK_SHARED, 20, &who), CKL_ETIMEDOUT);
  assert_string_equal(who.operation, "forget");
  char line[256];
  assert_true(ckl_holder_format(&who, line, sizeof line) > 0);
  assert_non_null(strstr(line, "forget"));

  assert_int_equal(ckl_path_lock_release(&lk), 0);
  assert_int_equal(lk.held, 0);
  assert_int_equal(lstat(f->path, &st), 0); /* the file stays, its record is zeroed */
  assert_int_equal(st.st_size, CKL__HOLDER_REC_SIZE);
  {
    unsigned char rec[CKL__HOLDER_REC_SIZE], zeros[CKL__HOLDER_REC_SIZE] = {0};
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, rec, sizeof rec, 0), (ssize_t)sizeof rec);
    close(fd);
    assert_memory_equal(rec, zeros, sizeof rec);
  }
  assert_int_equal(try_lock(f->path, CKL_LOCK_EXCLUSIVE, CKL_TRY, NULL), 0);
}

static void test_shared_holders_unknown(void **state) {
  fx *f = *state;
  ckl_path_lock a = {0}, b = {0};
  ckl_lock_opts o = {.timeout_ms = CKL_TRY, .operation = "verify"};
  assert_int_equal(ckl_path_lock_acquire(&a, f->path, CKL_LOCK_SHARED, &o), 0);
  assert_int_equal(ckl_path_lock_acquire(&b, f->path, CKL_LOCK_SHARED, &o), 0);
  ckl_holder who;
  assert_int_equal(try_lock(f->path, CKL_LOCK_EXCLUSIVE, CKL_TRY, &who), CKL_EBUSY);
  assert_int_equal(who.known, 0); /* shared holders are the roster's to name */
  assert_string_equal(who.target, f->path);
  assert_int_equal(try_lock(f->path, CKL_LOCK_EXCLUSIVE, 20, &who), CKL_ETIMEDOUT);
  assert_int_equal(ckl_path_lock_release(&a), 0);
  assert_int_equal(try_lock(f->path, CKL_LOCK_EXCLUSIVE, CKL_TRY, NULL), CKL_EBUSY);
  assert_int_equal(ckl_path_lock_release(&b), 0);
  assert_int_equal(try_lock(f->path, CKL_LOCK_EXCLUSIVE, CKL_TRY, NULL), 0);
}

static int hook_calls, hook_excl;
static off_t hook_start;
static int test_hook(const char *path, off_t start, int exclusive_holder, ckl_holder *out) {
  (void)path;
  hook_calls++;
  hook_start = start;
  hook_excl = exclusive_holder;
  out->pid = 4242;
  ckl__strlcpy(out->operation, "backup", sizeof out->operation);
  return 1;
}

static void test_holder_lookup_hook(void **state) {
  fx *f = *state;
  ckl_path_lock a = {0};
  assert_int_equal(ckl_path_lock_acquire(&a, f->path, CKL_LOCK_SHARED, NULL), 0);
  atomic_store(&ckl__holder_lookup, test_hook);
  ckl_holder who;
  assert_int_equal(try_lock(f->path, CKL_LOCK_EXCLUSIVE, CKL_TRY, &who), CKL_EBUSY);
  assert_int_equal(hook_calls, 1);
  assert_int_equal(hook_excl, 0);
  assert_int_equal(hook_start, 0);
  assert_int_equal(who.known, 1);
  assert_int_equal(who.pid, 4242);
  assert_string_equal(who.operation, "backup");
  assert_string_equal(who.target, f->path);
  assert_int_equal(ckl_path_lock_release(&a), 0);
}

/* Hold an exclusive OFD lock on path with raw syscalls and put `data` in
 * the file: a holder whose record is garbage. Returns the fd. */
static int raw_exclusive(const char *path, const void *data, size_t len) {
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, data, len, 0), (ssize_t)len);
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
  assert_int_equal(fcntl(fd, F_OFD_SETLK, &fl), 0);
  return fd;
}

static uint64_t fnv(const unsigned char *p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}
static void reseal(unsigned char *rec) {
  uint64_t h = fnv(rec, 248);
  for (int i = 0; i < 8; i++) rec[248 + i] = (unsigned char)(h >> (8 * i));
}

static void test_garbage_records_mean_unknown_but_busy(void **state) {
  fx *f = *state;
  char token[CKL_TOKEN_HEX_LEN + 1];
  assert_int_equal(ckl__random_token(token), 0);
  unsigned char good[CKL__HOLDER_REC_SIZE];
  ckl__holder_record_encode(good, token, "prune", 123);
  ckl_holder h = {0};
  assert_int_equal(ckl__holder_record_parse(good, sizeof good, &h), 0);
  assert_int_equal(h.known, 1);
  assert_string_equal(h.operation, "prune");
  assert_int_equal(h.since_ns, 123);
  assert_int_equal(ckl__holder_record_parse(good, sizeof good - 1, &h), -1);
  /* Every single-byte corruption is caught. */
  for (size_t i = 0; i < sizeof good; i++) {
    unsigned char bad[CKL__HOLDER_REC_SIZE];
    memcpy(bad, good, sizeof bad);
    bad[i] ^= 0x40;
    assert_int_equal(ckl__holder_record_parse(bad, sizeof bad, &h), -1);
  }
  /* Checksum-valid but malformed: host without terminator, non-printable
   * operation, non-hex token, bytes after a terminator, zero pid. */
  static const struct { size_t off, len; unsigned char v; } bad_fields[] = {
      {72, 64, 'x'}, {136, 1, 0x07}, {40, 1, 'G'}, {142, 1, 'z'}, {16, 8, 0}};
  for (size_t k = 0; k < CKL__ARRAY_SIZE(bad_fields); k++) {
    unsigned char bad[CKL__HOLDER_REC_SIZE];
    memcpy(bad, good, sizeof bad);
    memset(bad + bad_fields[k].off, bad_fields[k].v, bad_fields[k].len);
    reseal(bad);
    assert_int_equal(ckl__holder_record_parse(bad, sizeof bad, &h), -1);
  }

  /* Through the lock: garbage, a torn record, an empty file. */
  unsigned char noise[CKL__HOLDER_REC_SIZE];
  for (size_t i = 0; i < sizeof noise; i++) noise[i] = (unsigned char)(ckl__random_u64());
  const struct { const void *p; size_t n; } contents[] = {
      {noise, sizeof noise}, {good, 100}, {"", 0}, {"CKLHOLD1", 8}};
  for (size_t k = 0; k < CKL__ARRAY_SIZE(contents); k++) {
    int fd = raw_exclusive(f->path, contents[k].p, contents[k].n);
    ckl_holder who;
    assert_int_equal(try_lock(f->path, CKL_LOCK_SHARED, CKL_TRY, &who), CKL_EBUSY);
    assert_int_equal(who.known, 0);
    close(fd);
  }
  int fd = raw_exclusive(f->path, good, sizeof good);
  ckl_holder who;
  assert_int_equal(try_lock(f->path, CKL_LOCK_SHARED, CKL_TRY, &who), CKL_EBUSY);
  assert_int_equal(who.known, 1);
  assert_string_equal(who.token, token);
  close(fd);
}

static void test_zeroed_and_double_acquire(void **state) {
  fx *f = *state;
  ckl_path_lock lk = {0};
  assert_int_equal(ckl_path_lock_release(&lk), 0);
  assert_int_equal(ckl_path_lock_release(NULL), 0);
  assert_int_equal(ckl_path_lock_verify(&lk), -EINVAL);
  assert_int_equal(ckl_path_lock_unlink(&lk), -EINVAL);
  assert_int_equal(ckl_path_lock_convert(&lk, CKL_LOCK_SHARED, CKL_TRY, NULL), -EINVAL);
  assert_int_equal(ckl_path_lock_acquire(&lk, f->path, CKL_LOCK_EXCLUSIVE, NULL), 0);
  ino_t ino = lk.ino;
  /* A held struct is refused and left exactly as it was. */
  assert_int_equal(ckl_path_lock_acquire(&lk, f->path, CKL_LOCK_EXCLUSIVE, NULL), -EINVAL);
  assert_int_equal(ckl_path_lock_acquire(&lk, f->path, CKL_LOCK_SHARED, NULL), -EINVAL);
  assert_int_equal(lk.held, 1);
  assert_true(lk.ino == ino);
  assert_int_equal(ckl_path_lock_verify(&lk), 0);
  assert_int_equal(try_lock(f->path, CKL_LOCK_SHARED, CKL_TRY, NULL), CKL_EBUSY);
  assert_int_equal(ckl_path_lock_release(&lk), 0);
  assert_int_equal(ckl_path_lock_release(&lk), 0);

  ckl_path_lock z = {0};
  ckl_lock_opts bad_to = {.timeout_ms = -2};
  assert_int_equal(ckl_path_lock_acquire(NULL, f->path, CKL_LOCK_SHARED, NULL), -EINVAL);
  assert_int_equal(ckl_path_lock_acquire(&z, NULL, CKL_LOCK_SHARED, NULL), -EINVAL);
  assert_int_equal(ckl_path_lock_acquire(&z, "", CKL_LOCK_SHARED, NULL), -EINVAL);
  assert_int_equal(ckl_path_lock_acquire(&z, f->path, (ckl_lock_mode)3, NULL), -EINVAL);
  assert_int_equal(ckl_path_lock_acquire(&z, f->path, CKL_LOCK_SHARED, &bad_to), -EINVAL);
  assert_int_equal(z.held, 0);
}

/* ---- bad paths --------------------------------------------------------- */

static void test_symlink_refused_target_untouched(void **state) {
  fx *f = *state;
  char *target = ckl_test_path(f->dir, "precious");
  char *missing = ckl_test_path(f->dir, "never-created");
  char *dangling = ckl_test_path(f->dir, "dangling.lck");
  ckl_test_write_file(target, "precious", 8);
  assert_int_equal(chmod(target, 0644), 0);
  assert_int_equal(symlink(target, f->path), 0);
  assert_int_equal(symlink(missing, dangling), 0);
  for (int m = CKL_LOCK_SHARED; m <= CKL_LOCK_EXCLUSIVE; m++) {
    ckl_path_lock lk = {0};
    assert_int_equal(ckl_path_lock_acquire(&lk, f->path, (ckl_lock_mode)m, NULL), -ELOOP);
    assert_int_equal(lk.held, 0);
    assert_int_equal(ckl_path_lock_acquire(&lk, dangling, (ckl_lock_mode)m, NULL), -ELOOP);
  }
  assert_int_equal(ckl_path_lock_probe(f->path, CKL_LOCK_SHARED, NULL), -ELOOP);
  size_t len;
  char *data = ckl_test_read_file(target, &len);
  assert_int_equal(len, 8);
  assert_memory_equal(data, "precious", 8);
  free(data);
  struct stat st;
  assert_int_equal(stat(target, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0644);
  assert_int_equal(lstat(missing, &st), -1);
  assert_int_equal(errno, ENOENT);
  free(target);
  free(missing);
  free(dangling);
}

static void test_directory_fifo_missing_parent_long_name(void **state) {
  fx *f = *state;
  ckl_path_lock lk = {0};
  assert_int_equal(ckl_path_lock_acquire(&lk, f->dir, CKL_LOCK_EXCLUSIVE, NULL), -EISDIR);
  assert_int_equal(ckl_path_lock_acquire(&lk, f->dir, CKL_LOCK_SHARED, NULL), -EISDIR);
  assert_int_equal(ckl_path_lock_probe(f->dir, CKL_LOCK_SHARED, NULL), -EISDIR);

  char *fifo = ckl_test_path(f->dir, "fifo.lck");
  assert_int_equal(mkfifo(fifo, 0600), 0);
  assert_int_equal(ckl_path_lock_acquire(&lk, fifo, CKL_LOCK_EXCLUSIVE, NULL), -EINVAL);
  assert_int_equal(ckl_path_lock_acquire(&lk, fifo, CKL_LOCK_SHARED, NULL), -EINVAL);

  char *orphan = ckl_test_path(f->dir, "no-such-dir/a.lck");
  assert_int_equal(ckl_path_lock_acquire(&lk, orphan, CKL_LOCK_EXCLUSIVE, NULL), -ENOENT);
  assert_int_equal(ckl_path_lock_acquire(&lk, orphan, CKL_LOCK_SHARED, NULL), -ENOENT);
  assert_int_equal(ckl_path_lock_probe(f->path, CKL_LOCK_SHARED, NULL), -ENOENT);
  assert_int_equal(ckl_test_count_entries(f->dir, NULL), 1); /* only the fifo */

  char name[300];
  memset(name, 'n', sizeof name - 1);
  name[sizeof name - 1] = '\0';
  char *longname = ckl_test_path(f->dir, name);
  assert_int_equal(ckl_path_lock_acquire(&lk, longname, CKL_LOCK_EXCLUSIVE, NULL),
                   -ENAMETOOLONG);
  char *huge = malloc(5000);
  memset(huge, 'a', 4999);
  huge[0] = '/';
  huge[4999] = '\0';
  for (int i = 100; i < 4999; i += 100) huge[i] = '/';
  assert_int_equal(ckl_path_lock_acquire(&lk, huge, CKL_LOCK_SHARED, NULL), -ENAMETOOLONG);
  assert_int_equal(lk.held, 0);
  free(huge);
  free(longname);
  free(orphan);
  free(fifo);
}

/* Run fn in a child as uid/gid 65534. Skips the test when privileges
 * cannot be dropped (not root). Child exit: 0 ok, 77 skip, else the line
 * of the failed check (mod 256, never 0 or 77 by construction below). */
#define CHILD_CHECK(c) \
  do { if (!(c)) { fprintf(stderr, "child check failed line %d: %s\n", __LINE__, #c); return 1; } } while (0)

static int drop_privileges(void) {
  if (geteuid() != 0) return -1;
  if (setgroups(0, NULL) != 0 || setresgid(65534, 65534, 65534) != 0 ||
      setresuid(65534, 65534, 65534) != 0)
    return -1;
  return 0;
}

static int as_nobody(const char *dir) {
  if (drop_privileges() < 0) return 77;
  char p[512];
  ckl_path_lock lk = {0};
  /* chmod 000 file: unreadable and unwritable. */
  snprintf(p, sizeof p, "%s/rw/000.lck", dir);
  CHILD_CHECK(ckl_path_lock_acquire(&lk, p, CKL_LOCK_EXCLUSIVE, NULL) == -EACCES);
  CHILD_CHECK(ckl_path_lock_acquire(&lk, p, CKL_LOCK_SHARED, NULL) == -EACCES);
  /* Read-only directory: a missing lock file cannot be created... */
  snprintf(p, sizeof p, "%s/ro/missing.lck", dir);
  CHILD_CHECK(ckl_path_lock_acquire(&lk, p, CKL_LOCK_EXCLUSIVE, NULL) == -EACCES);
  CHILD_CHECK(ckl_path_lock_acquire(&lk, p, CKL_LOCK_SHARED, NULL) == -EACCES);
  CHILD_CHECK(access(p, F_OK) != 0 && errno == ENOENT);
  /* ...an existing readable one is locked shared, read-only, and cannot
   * become exclusive. */
  snprintf(p, sizeof p, "%s/ro/readable.lck", dir);
  CHILD_CHECK(ckl_path_lock_acquire(&lk, p, CKL_LOCK_EXCLUSIVE, NULL) == -EACCES);
  CHILD_CHECK(ckl_path_lock_acquire(&lk, p, CKL_LOCK_SHARED, NULL) == 0);
  CHILD_CHECK(ckl_path_lock_convert(&lk, CKL_LOCK_EXCLUSIVE, CKL_TRY, NULL) == -EACCES);
  CHILD_CHECK(lk.held == 1 && lk.mode == CKL_LOCK_SHARED);
  ckl_path_lock other = {0};
  CHILD_CHECK(ckl_path_lock_acquire(&other, p, CKL_LOCK_SHARED, NULL) == 0);
  ckl_path_lock_release(&other);
  ckl_path_lock_release(&lk);
  return 0;
}

static void test_permissions_as_nobody(void **state) {
  (void)state;
  /* Under /tmp, not the build tree: every ancestor must be searchable by
   * uid 65534, which a build directory under a 0700 home need not be. */
  char dir[] = "/tmp/ckl-flock-perm.XXXXXX";
  assert_non_null(mkdtemp(dir));
  assert_int_equal(chmod(dir, 0755), 0);
  char p[512];
  snprintf(p, sizeof p, "%s/rw", dir);
  assert_int_equal(mkdir(p, 0777), 0);
  assert_int_equal(chmod(p, 0777), 0);
  snprintf(p, sizeof p, "%s/rw/000.lck", dir);
  ckl_test_write_file(p, "", 0);
  assert_int_equal(chmod(p, 0), 0);
  snprintf(p, sizeof p, "%s/ro", dir);
  assert_int_equal(mkdir(p, 0755), 0);
  snprintf(p, sizeof p, "%s/ro/readable.lck", dir);
  ckl_test_write_file(p, "", 0);
  assert_int_equal(chmod(p, 0644), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) _exit(as_nobody(dir));
  int st = ckl_test_wait(pid);
  ckl_test_rmtree(dir);
  if (st == 77) {
    print_message("skipped: cannot drop privileges to uid 65534 (not root)\n");
    skip();
  }
  assert_int_equal(st, 0);
}

static int on_readonly_mount(const char *dir) {
  if (unshare(CLONE_NEWNS) != 0) return 77;
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) return 77;
  if (mount("ckl-ro", dir, "tmpfs", 0, "size=64k,mode=0755") != 0) return 77;
  char exist[512], missing[512];
  snprintf(exist, sizeof exist, "%s/exists.lck", dir);
  snprintf(missing, sizeof missing, "%s/missing.lck", dir);
  int fd = open(exist, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  CHILD_CHECK(fd >= 0);
  close(fd);
  if (mount(NULL, dir, NULL, MS_REMOUNT | MS_RDONLY, NULL) != 0) return 77;
  ckl_path_lock lk = {0};
  CHILD_CHECK(ckl_path_lock_acquire(&lk, missing, CKL_LOCK_EXCLUSIVE, NULL) == -EROFS);
  CHILD_CHECK(ckl_path_lock_acquire(&lk, missing, CKL_LOCK_SHARED, NULL) == -EROFS);
  CHILD_CHECK(ckl_path_lock_acquire(&lk, exist, CKL_LOCK_EXCLUSIVE, NULL) == -EROFS);
  CHILD_CHECK(ckl_path_lock_acquire(&lk, exist, CKL_LOCK_SHARED, NULL) == 0);
  CHILD_CHECK(ckl_path_lock_convert(&lk, CKL_LOCK_EXCLUSIVE, CKL_TRY, NULL) == -EROFS);
  ckl_path_lock other = {0};
  /* A real lock: the read-only description still excludes writers. */
  int wfd = open(exist, O_RDONLY | O_CLOEXEC);
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
  CHILD_CHECK(fcntl(wfd, F_OFD_GETLK, &fl) == 0 && fl.l_type == F_RDLCK);
  ckl_path_lock_release(&lk);
  CHILD_CHECK(ckl_path_lock_acquire(&other, exist, CKL_LOCK_SHARED, NULL) == 0);
  ckl_path_lock_release(&other);
  close(wfd);
  umount(dir);
  return 0;
}

static void test_readonly_filesystem(void **state) {
  fx *f = *state;
  char *mnt = ckl_test_path(f->dir, "mnt");
  assert_int_equal(mkdir(mnt, 0755), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) _exit(on_readonly_mount(mnt));
  int st = ckl_test_wait(pid);
  free(mnt);
  if (st == 77) {
    print_message("skipped: cannot mount a read-only tmpfs here (needs CAP_SYS_ADMIN)\n");
    skip();
  }
  assert_int_equal(st, 0);
}

/* ---- lock, then verify ---------------------------------------------------- */

typedef struct waiter {
  const char *path;
  int64_t timeout;
  ckl_path_lock lk;
  int rc;
} waiter;

static void *waiter_main(void *arg) {
  waiter *w = arg;
  ckl_lock_opts o = {.timeout_ms = w->timeout, .operation = "waiter"};
  w->rc = ckl_path_lock_acquire(&w->lk, w->path, CKL_LOCK_EXCLUSIVE, &o);
  return NULL;
}

/* The waiter is granted the old inode, pauses at flock.after_lock; the
 * file is replaced; on release it must notice and end up on the new one. */
static void replaced_while_waiting(const char *path, int64_t timeout) {
  ckl_path_lock first = {0};
  assert_int_equal(ckl_path_lock_acquire(&first, path, CKL_LOCK_EXCLUSIVE, NULL), 0);
  ino_t old_ino = first.ino;
  assert_int_equal(ckl_failpoint_arm("flock.after_lock", "1*pause"), 0);
  waiter w = {.path = path, .timeout = timeout};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, waiter_main, &w), 0);
  /* Only the waiter can be granted anything now, and only the old inode,
   * which is still at the path. */
  assert_int_equal(ckl_path_lock_release(&first), 0);
  assert_int_equal(ckl_failpoint_wait_hits("flock.after_lock", 1, CKL_TEST_WAIT_MS), 0);
  ino_t new_ino = replace_file(path);
  assert_true(new_ino != old_ino); /* the old inode is still open: no reuse */
  assert_int_equal(ckl_failpoint_release("flock.after_lock"), 1);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(w.rc, 0);
  assert_true(w.lk.ino == new_ino);
  assert_true(w.lk.ino == ino_of(path));
  assert_int_equal(ckl_failpoint_hits("flock.after_lock"), 2); /* old, then new */
  assert_int_equal(ckl_path_lock_verify(&w.lk), 0);
  assert_int_equal(try_lock(path, CKL_LOCK_SHARED, CKL_TRY, NULL), CKL_EBUSY);
  assert_int_equal(ckl_path_lock_release(&w.lk), 0);
}

static void test_waiter_with_deadline_moves_to_new_file(void **state) {
  replaced_while_waiting(((fx *)*state)->path, 10000);
}

static void test_blocking_waiter_moves_to_new_file(void **state) {
  replaced_while_waiting(((fx *)*state)->path, CKL_FOREVER);
}

static void test_unlink_moves_waiters(void **state) {
  fx *f = *state;
  ckl_path_lock holder = {0};
  assert_int_equal(ckl_path_lock_acquire(&holder, f->path, CKL_LOCK_EXCLUSIVE, NULL), 0);
  ino_t old_ino = holder.ino;
  /* Keep the old inode allocated (this fd holds no lock), or the file the
   * waiter creates could get its number back and prove nothing. */
  int pin = open(f->path, O_RDONLY | O_CLOEXEC);
  assert_true(pin >= 0);
  assert_int_equal(ckl_failpoint_arm_spec("flock.before_lock=count;flock.after_lock=count;"
                                          "flock.before_unlink=count"), 0);
  waiter w = {.path = f->path, .timeout = CKL_FOREVER};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, waiter_main, &w), 0);
  /* Past before_lock the waiter has the old inode open; it can only be
   * granted that inode, after the unlink below. */
  assert_int_equal(ckl_failpoint_wait_hits("flock.before_lock", 1, CKL_TEST_WAIT_MS), 0);
  assert_int_equal(ckl_path_lock_unlink(&holder), 0);
  assert_int_equal(holder.held, 0);
  assert_int_equal(ckl_failpoint_hits("flock.before_unlink"), 1);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(w.rc, 0);
  assert_true(w.lk.ino != old_ino);
  assert_true(w.lk.ino == ino_of(f->path));
  assert_int_equal(ckl_failpoint_hits("flock.after_lock"), 2);
  assert_int_equal(ckl_failpoint_hits("flock.before_lock"), 2);
  assert_int_equal(ckl_path_lock_release(&w.lk), 0);
  close(pin);
}

typedef struct replacer {
  const char *path;
  int times;
} replacer;

static void *replacer_main(void *arg) {
  replacer *r = arg;
  for (int i = 1; i <= r->times; i++) {
    if (ckl_failpoint_wait_hits("flock.after_lock", (uint64_t)i, CKL_TEST_WAIT_MS) != 0) abort();
    if (unlink(r->path) != 0) abort();
    int fd = open(r->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) abort();
    close(fd);
    ckl_failpoint_release("flock.after_lock");
  }
  return NULL;
}

static void test_try_gives_up_on_a_file_that_keeps_changing(void **state) {
  fx *f = *state;
  const int n = CKL__REPLACED_FAST_RETRIES;
  ckl_test_write_file(f->path, "", 0);
  /* n replacements: a TRY caller still gets the lock on the last file. */
  assert_int_equal(ckl_failpoint_arm("flock.after_lock", "pause"), 0);
  replacer r = {.path = f->path, .times = n};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, replacer_main, &r), 0);
  waiter w = {.path = f->path, .timeout = CKL_TRY};
  pthread_t tw;
  assert_int_equal(pthread_create(&tw, NULL, waiter_main, &w), 0);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(ckl_failpoint_wait_hits("flock.after_lock", (uint64_t)n + 1, CKL_TEST_WAIT_MS),
                   0);
  assert_int_equal(ckl_failpoint_disarm("flock.after_lock"), 0);
  assert_int_equal(pthread_join(tw, NULL), 0);
  assert_int_equal(w.rc, 0);
  assert_true(w.lk.ino == ino_of(f->path));
  assert_int_equal(ckl_path_lock_release(&w.lk), 0);
  /* One more and it answers CKL_EREPLACED instead of spinning. */
  assert_int_equal(ckl_failpoint_arm("flock.after_lock", "pause"), 0);
  r.times = n + 1;
  w = (waiter){.path = f->path, .timeout = CKL_TRY};
  assert_int_equal(pthread_create(&t, NULL, replacer_main, &r), 0);
  assert_int_equal(pthread_create(&tw, NULL, waiter_main, &w), 0);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(pthread_join(tw, NULL), 0);
  assert_int_equal(w.rc, CKL_EREPLACED);
  assert_int_equal(w.lk.held, 0);
  assert_int_equal(ckl_failpoint_hits("flock.after_lock"), (uint64_t)n + 1);
}

static void test_verify_and_unlink(void **state) {
  fx *f = *state;
  ckl_path_lock lk = {0};
  assert_int_equal(ckl_path_lock_acquire(&lk, f->path, CKL_LOCK_EXCLUSIVE, NULL), 0);
  assert_int_equal(ckl_path_lock_verify(&lk), 0);
  char *other = ckl_test_path(f->dir, "other");
  ckl_test_write_file(other, "x", 1);
  assert_int_equal(rename(other, f->path), 0); /* replaced */
  assert_int_equal(ckl_path_lock_verify(&lk), CKL_EREPLACED);
  /* Unlink must not remove a file that is not ours. */
  ino_t theirs = ino_of(f->path);
  assert_int_equal(ckl_path_lock_unlink(&lk), CKL_EREPLACED);
  assert_int_equal(lk.held, 0);
  assert_true(ino_of(f->path) == theirs);

  assert_int_equal(ckl_path_lock_acquire(&lk, f->path, CKL_LOCK_EXCLUSIVE, NULL), 0);
  assert_int_equal(unlink(f->path), 0); /* removed */
  assert_int_equal(ckl_path_lock_verify(&lk), CKL_EREPLACED);
  assert_int_equal(ckl_path_lock_release(&lk), 0);

  assert_int_equal(ckl_path_lock_acquire(&lk, f->path, CKL_LOCK_EXCLUSIVE, NULL), 0);
  assert_int_equal(ckl_path_lock_unlink(&lk), 0);
  assert_int_equal(lk.held, 0);
  assert_int_equal(access(f->path, F_OK), -1);
  /* A shared holder may not destroy the file others hold too. */
  assert_int_equal(ckl_path_lock_acquire(&lk, f->path, CKL_LOCK_SHARED, NULL), 0);
  assert_int_equal(ckl_path_lock_unlink(&lk), -EINVAL);
  assert_int_equal(lk.held, 0);
  assert_int_equal(access(f->path, F_OK), 0);
  /* A failing unlink step still releases. */
  assert_int_equal(ckl_path_lock_acquire(&lk, f->path, CKL_LOCK_EXCLUSIVE, NULL), 0);
  assert_int_equal(ckl_failpoint_arm("flock.before_unlink", "error(EIO)"), 0);
  assert_int_equal(ckl_path_lock_unlink(&lk), -EIO);
  assert_int_equal(lk.held, 0);
  assert_int_equal(access(f->path, F_OK), 0);
  assert_int_equal(try_lock(f->path, CKL_LOCK_EXCLUSIVE, CKL_TRY, NULL), 0);
  free(other);
}

static void test_failpoint_errors_leave_nothing_held(void **state) {
  fx *f = *state;
  ckl_path_lock lk = {0};
  ckl_lock_order order = {0};
  ckl_lock_opts o = {.level = CKL_LEVEL_SNAPSHOT, .order = &order};
  assert_int_equal(ckl_failpoint_arm("flock.before_lock", "1*error(ENOSPC)"), 0);
  assert_int_equal(ckl_path_lock_acquire(&lk, f->path, CKL_LOCK_EXCLUSIVE, &o), -ENOSPC);
  assert_int_equal(ckl_failpoint_arm("flock.after_lock", "1*error(EIO)"), 0);
  assert_int_equal(ckl_path_lock_acquire(&lk, f->path, CKL_LOCK_EXCLUSIVE, &o), -EIO);
  assert_int_equal(lk.held, 0);
  assert_int_equal(order.n, 0);
  assert_int_equal(try_lock(f->path, CKL_LOCK_EXCLUSIVE, CKL_TRY, NULL), 0);
}

/* ---- convert and probe ------------------------------------------------------ */

static void test_convert(void **state) {
  fx *f = *state;
  ckl_path_lock lk = {0}, other = {0};
  ckl_lock_opts o = {.operation = "backup"};
  assert_int_equal(ckl_path_lock_acquire(&lk, f->path, CKL_LOCK_EXCLUSIVE, &o), 0);
  assert_int_equal(ckl_path_lock_convert(&lk, CKL_LOCK_EXCLUSIVE, CKL_TRY, NULL), 0);
  assert_int_equal(ckl_path_lock_convert(&lk, CKL_LOCK_SHARED, CKL_TRY, NULL), 0);
  assert_int_equal(lk.mode, CKL_LOCK_SHARED);
  assert_int_equal(ckl_path_lock_acquire(&other, f->path, CKL_LOCK_SHARED, NULL), 0);
  ckl_holder who;
  assert_int_equal(ckl_path_lock_convert(&lk, CKL_LOCK_EXCLUSIVE, CKL_TRY, &who), CKL_EBUSY);
  assert_int_equal(who.known, 0);
  assert_int_equal(ckl_path_lock_convert(&lk, CKL_LOCK_EXCLUSIVE, 20, &who), CKL_ETIMEDOUT);
  assert_int_equal(lk.mode, CKL_LOCK_SHARED); /* kept */
  assert_int_equal(ckl_path_lock_probe(f->path, CKL_LOCK_SHARED, NULL), 0);
  assert_int_equal(ckl_path_lock_probe(f->path, CKL_LOCK_EXCLUSIVE, NULL), CKL_EBUSY);
  assert_int_equal(ckl_path_lock_release(&other), 0);
  assert_int_equal(ckl_path_lock_convert(&lk, CKL_LOCK_EXCLUSIVE, CKL_TRY, NULL), 0);
  assert_int_equal(lk.mode, CKL_LOCK_EXCLUSIVE);
  assert_int_equal(ckl_path_lock_probe(f->path, CKL_LOCK_SHARED, &who), CKL_EBUSY);
  assert_int_equal(who.known, 1);
  assert_string_equal(who.token, lk.token);
  assert_int_equal(ckl_path_lock_convert(&lk, (ckl_lock_mode)0, CKL_TRY, NULL), -EINVAL);
  assert_int_equal(ckl_path_lock_release(&lk), 0);
  assert_int_equal(ckl_path_lock_probe(f->path, CKL_LOCK_EXCLUSIVE, &who), 0);
}

/* ---- across processes and fork ---------------------------------------------- */

typedef struct proc_arg {
  const char *path;
  int ready[2], go[2];
} proc_arg;

static int hold_exclusive_child(void *v) {
  ckl_test_die_with_parent();
  proc_arg *a = v;
  ckl_path_lock lk = {0};
  ckl_lock_opts o = {.operation = "backup"};
  int rc = ckl_path_lock_acquire(&lk, a->path, CKL_LOCK_EXCLUSIVE, &o);
  char c = rc == 0 ? 'R' : 'E';
  if (write(a->ready[1], &c, 1) != 1) return 2;
  if (read(a->go[0], &c, 1) != 1) return 3;
  return rc == 0 ? 0 : 1; /* exit releases: the description dies with us */
}

static void test_across_processes(void **state) {
  fx *f = *state;
  proc_arg a = {.path = f->path};
  assert_int_equal(pipe2(a.ready, O_CLOEXEC), 0);
  assert_int_equal(pipe2(a.go, O_CLOEXEC), 0);
  pid_t pid = ckl_test_fork(hold_exclusive_child, &a);
  char c;
  assert_int_equal(read(a.ready[0], &c, 1), 1);
  assert_int_equal(c, 'R');
  ckl_holder who;
  assert_int_equal(try_lock(f->path, CKL_LOCK_SHARED, CKL_TRY, &who), CKL_EBUSY);
  assert_int_equal(who.known, 1);
  assert_int_equal(who.pid, pid);
  assert_int_equal(who.tid, pid);
  assert_string_equal(who.operation, "backup");
  assert_int_equal(try_lock(f->path, CKL_LOCK_EXCLUSIVE, 30, &who), CKL_ETIMEDOUT);
  assert_int_equal(who.pid, pid);
  assert_int_equal(write(a.go[1], "G", 1), 1);
  assert_int_equal(ckl_test_wait(pid), 0);
  assert_int_equal(try_lock(f->path, CKL_LOCK_EXCLUSIVE, CKL_TRY, NULL), 0);
  for (int i = 0; i < 2; i++) {
    close(a.ready[i]);
    close(a.go[i]);
  }
}

static ckl_path_lock inherited;
static const char *inherited_path;

static int release_inherited_child(void *v) {
  (void)v;
  if (ckl_path_lock_release(&inherited) != 0 || inherited.held) return 1;
  /* The parent's lock must still be there, record included. */
  ckl_path_lock lk = {0};
  ckl_holder who;
  ckl_lock_opts o = {.busy_holder = &who};
  if (ckl_path_lock_acquire(&lk, inherited_path, CKL_LOCK_SHARED, &o) != CKL_EBUSY) return 2;
  if (!who.known || who.pid != getppid()) return 3;
  return 0;
}

static void test_release_in_fork_child_is_inert(void **state) {
  fx *f = *state;
  inherited_path = f->path;
  memset(&inherited, 0, sizeof inherited);
  ckl_lock_opts o = {.operation = "forget"};
  assert_int_equal(ckl_path_lock_acquire(&inherited, f->path, CKL_LOCK_EXCLUSIVE, &o), 0);
  assert_int_equal(ckl_test_wait(ckl_test_fork(release_inherited_child, NULL)), 0);
  assert_int_equal(ckl_path_lock_verify(&inherited), 0);
  ckl_holder who;
  assert_int_equal(try_lock(f->path, CKL_LOCK_SHARED, CKL_TRY, &who), CKL_EBUSY);
  assert_int_equal(who.pid, getpid());
  assert_string_equal(who.operation, "forget");
  assert_int_equal(ckl_path_lock_release(&inherited), 0);
  assert_int_equal(try_lock(f->path, CKL_LOCK_EXCLUSIVE, CKL_TRY, NULL), 0);
}

/* A fork child that neither execs nor exits shares the description of a
 * lock taken before the fork: release must unlock it explicitly, since the
 * close() alone would leave it held by the child's copy of the fd. */
static int linger_child(void *v) {
  ckl_test_die_with_parent();
  proc_arg *a = v;
  char c = 'R';
  if (write(a->ready[1], &c, 1) != 1) return 2;
  if (read(a->go[0], &c, 1) != 1) return 3; /* holds the inherited fd until told */
  return 0;
}

static void test_release_with_live_fork_child_unlocks(void **state) {
  fx *f = *state;
  proc_arg a = {.path = f->path};
  assert_int_equal(pipe2(a.ready, O_CLOEXEC), 0);
  assert_int_equal(pipe2(a.go, O_CLOEXEC), 0);
  ckl_path_lock lk = {0};
  for (int mode = CKL_LOCK_SHARED; mode <= CKL_LOCK_EXCLUSIVE; mode++) {
    assert_int_equal(ckl_path_lock_acquire(&lk, f->path, (ckl_lock_mode)mode, NULL), 0);
    pid_t pid = ckl_test_fork(linger_child, &a);
    char c;
    /* Results are asserted after the child is let go, so that a failure
     * cannot leave it (and the test) waiting forever. */
    int rc[6];
    rc[0] = (int)read(a.ready[0], &c, 1);
    rc[1] = try_lock(f->path, CKL_LOCK_EXCLUSIVE, CKL_TRY, NULL);
    rc[2] = ckl_path_lock_release(&lk);
    /* The child is still alive with its copy of the fd. */
    rc[3] = try_lock(f->path, CKL_LOCK_EXCLUSIVE, CKL_TRY, NULL);
    /* A lock taken after the fork is not in the child: close() releases. */
    rc[4] = ckl_path_lock_acquire(&lk, f->path, (ckl_lock_mode)mode, NULL);
    if (rc[4] == 0) ckl_path_lock_release(&lk);
    rc[5] = try_lock(f->path, CKL_LOCK_EXCLUSIVE, CKL_TRY, NULL);
    assert_int_equal(write(a.go[1], "G", 1), 1);
    assert_int_equal(ckl_test_wait(pid), 0);
    assert_int_equal(rc[0], 1);
    assert_int_equal(rc[1], CKL_EBUSY);
    assert_int_equal(rc[2], 0);
    assert_int_equal(rc[3], 0);
    assert_int_equal(rc[4], 0);
    assert_int_equal(rc[5], 0);
  }
  for (int i = 0; i < 2; i++) {
    close(a.ready[i]);
    close(a.go[i]);
  }
}

/* ---- lock order --------------------------------------------------------------- */

#ifdef CKL_DEBUG
static int order_violation_child(void *arg) {
  (void)arg;
  ckl_lock_order o = {0};
  if (ckl_lock_order_push(&o, CKL_LEVEL_SNAPSHOT) != 0) return 1;
  (void)ckl_lock_order_push(&o, CKL_LEVEL_GROUP); /* aborts in debug builds */
  return 2;
}
#endif

static void test_lock_order(void **state) {
  fx *f = *state;
#ifdef CKL_DEBUG
  /* Debug builds turn a violation into abort(): prove that in a child.
   * The return-code assertions below run in the release build (make test). */
  (void)f;
  assert_int_equal(ckl_test_wait(ckl_test_fork(order_violation_child, NULL)), 128 + SIGABRT);
  return;
#endif
  ckl_lock_order o = {0};
  assert_int_equal(ckl_lock_order_push(&o, CKL_LEVEL_PROCESS), 0);
  assert_int_equal(ckl_lock_order_push(&o, CKL_LEVEL_GROUP), 0);
  assert_int_equal(ckl_lock_order_push(&o, CKL_LEVEL_SNAPSHOT), 0);
  assert_int_equal(ckl_lock_order_push(&o, CKL_LEVEL_SNAPSHOT), 0); /* equal is fine */
  assert_int_equal(ckl_lock_order_push(&o, CKL_LEVEL_MANIFEST), 0);
  assert_int_equal(ckl_lock_order_push(&o, CKL_LEVEL_GROUP), CKL_ELOCKORDER);
  assert_int_equal(o.n, 5);
  ckl_lock_order_pop(&o, CKL_LEVEL_MANIFEST);
  ckl_lock_order_pop(&o, CKL_LEVEL_SNAPSHOT);
  /* A snapshot is still held: a group lock is still out of order. */
  assert_int_equal(ckl_lock_order_push(&o, CKL_LEVEL_GROUP), CKL_ELOCKORDER);
  ckl_lock_order_pop(&o, CKL_LEVEL_SNAPSHOT);
  assert_int_equal(ckl_lock_order_push(&o, CKL_LEVEL_GROUP), 0);
  assert_int_equal(ckl_lock_order_push(&o, CKL_LEVEL_NONE), 0);
  assert_int_equal(ckl_lock_order_push(&o, (ckl_lock_level)9), -EINVAL);
  assert_int_equal(ckl_lock_order_push(NULL, CKL_LEVEL_GROUP), 0);
  ckl_lock_order_pop(&o, CKL_LEVEL_MANIFEST); /* not held: no-op */
  assert_int_equal(o.n, 3);
  ckl_lock_order full = {0};
  for (int i = 0; i < CKL_LOCK_ORDER_MAX; i++)
    assert_int_equal(ckl_lock_order_push(&full, CKL_LEVEL_SNAPSHOT), 0);
  assert_int_equal(ckl_lock_order_push(&full, CKL_LEVEL_SNAPSHOT), -EOVERFLOW);

  /* Group, then the process locker: the reversed order of the table. */
  ckl_lock_order op = {0};
  char *group = ckl_test_path(f->dir, "group.lck");
  ckl_path_lock g = {0}, s1 = {0}, s2 = {0}, bad = {0};
  ckl_lock_opts go = {.level = CKL_LEVEL_GROUP, .order = &op};
  ckl_lock_opts so = {.level = CKL_LEVEL_SNAPSHOT, .order = &op};
  assert_int_equal(ckl_path_lock_acquire(&g, group, CKL_LOCK_EXCLUSIVE, &go), 0);
  assert_int_equal(ckl_lock_order_push(&op, CKL_LEVEL_PROCESS), CKL_ELOCKORDER);
  assert_int_equal(ckl_path_lock_acquire(&s1, f->path, CKL_LOCK_SHARED, &so), 0);
  char *snap2 = ckl_test_path(f->dir, "snap2.lck");
  assert_int_equal(ckl_path_lock_acquire(&s2, snap2, CKL_LOCK_EXCLUSIVE, &so), 0);
  char *group2 = ckl_test_path(f->dir, "group2.lck");
  assert_int_equal(ckl_path_lock_acquire(&bad, group2, CKL_LOCK_EXCLUSIVE, &go),
                   CKL_ELOCKORDER);
  assert_int_equal(bad.held, 0);
  assert_int_equal(access(group2, F_OK), -1); /* refused before touching anything */
  assert_int_equal(op.n, 3);
  assert_int_equal(ckl_path_lock_release(&s1), 0);
  assert_int_equal(ckl_path_lock_release(&s2), 0);
  assert_int_equal(op.n, 1);
  assert_int_equal(ckl_path_lock_acquire(&bad, group2, CKL_LOCK_EXCLUSIVE, &go), 0);
  assert_int_equal(ckl_path_lock_release(&bad), 0);
  assert_int_equal(ckl_path_lock_release(&g), 0);
  assert_int_equal(op.n, 0);
  free(group);
  free(group2);
  free(snap2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
      T(test_exclusive_names_holder),
      T(test_shared_holders_unknown),
      T(test_holder_lookup_hook),
      T(test_garbage_records_mean_unknown_but_busy),
      T(test_zeroed_and_double_acquire),
      T(test_symlink_refused_target_untouched),
      T(test_directory_fifo_missing_parent_long_name),
      T(test_permissions_as_nobody),
      T(test_readonly_filesystem),
      T(test_waiter_with_deadline_moves_to_new_file),
      T(test_blocking_waiter_moves_to_new_file),
      T(test_unlink_moves_waiters),
      T(test_try_gives_up_on_a_file_that_keeps_changing),
      T(test_verify_and_unlink),
      T(test_failpoint_errors_leave_nothing_held),
      T(test_convert),
      T(test_across_processes),
      T(test_release_in_fork_child_is_inert),
      T(test_release_with_live_fork_child_unlocks),
      T(test_lock_order),
#undef T
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

char *ckl_test_mkdtemp(const char *tag) {
  const char *base = getenv("CKL_TEST_TMPDIR");
  if (!base || !*base) base = "/tmp";
  mkdir(base, 0700);
  char *p = NULL;
  if (asprintf(&p, "%s/%s.XXXXXX", base, tag ? tag : "ckl") < 0) abort();
  if (!mkdtemp(p)) {
    fprintf(stderr, "mkdtemp %s: %s\n", p, strerror(errno));
    abort();
  }
  return p;
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)ftw;
  if (flag == FTW_DP || flag == FTW_D) {
    chmod(path, 0700);
    return rmdir(path) == 0 || errno == ENOENT ? 0 : -errno;
  }
  return unlink(path) == 0 || errno == ENOENT ? 0 : -errno;
}

int ckl_test_rmtree(const char *path) {
  if (!path) return 0;
  /* Most trees are writable throughout: remove them at once. The chmod
   * pass below walked all 65,536 prefix directories of a store in a child
   * process and cost most of a store's teardown (0.7 s of 0.85 s in a
   * release build, much more under ASan), which made suites that build
   * a store per test run close to their ctest timeouts under sanitizers. */
  if (nftw(path, rm_cb, 32, FTW_DEPTH | FTW_PHYS) == 0) return 0;
  /* Make every directory writable first so read-only test dirs go too. */
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "chmod -R u+rwx '%s' 2>/dev/null", path);
  if (system(cmd) < 0) { /* best effort */ }
  int rc = nftw(path, rm_cb, 32, FTW_DEPTH | FTW_PHYS);
  return rc < 0 ? -errno : rc;
}

char *ckl_test_path(const char *dir, const char *name) {
  char *p = NULL;
  if (asprintf(&p, "%s/%s", dir, name) < 0) abort();
  return p;
}

void ckl_test_mkdirs(const char *root, const char *rel) {
  char *p = ckl_test_path(root, rel);
  for (char *c = p + strlen(root) + 1; *c; c++) {
    if (*c != '/') continue;
    *c = '\0';
    mkdir(p, 0755);
    *c = '/';
  }
  assert_true(mkdir(p, 0755) == 0 || errno == EEXIST);
  free(p);
}

void ckl_test_write_file(const char *path, const void *data, size_t len) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  assert_true(fd >= 0);
  const char *p = data;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    assert_true(n > 0);
    p += n;
    len -= (size_t)n;
  }
  assert_int_equal(close(fd), 0);
}

char *ckl_test_read_file(const char *path, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NULL;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return NULL;
  }
  char *buf = malloc((size_t)st.st_size + 1);
  size_t got = 0;
  while (got < (size_t)st.st_size) {
    ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
    if (n <= 0) break;
    got += (size_t)n;
  }
  close(fd);
  buf[got] = '\0';
  if (len) *len = got;
  return buf;
}

int ckl_test_count_entries(const char *dir, const char *prefix) {
  DIR *d = opendir(dir);
  if (!d) return -errno;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    if (!prefix || strncmp(e->d_name, prefix, strlen(prefix)) == 0) n++;
  }
  closedir(d);
  return n;
}

void ckl_test_wait_file(const char *dir, const char *prefix) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  int64_t end = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000 + CKL_TEST_WAIT_MS;
  for (;;) {
    if (ckl_test_count_entries(dir, prefix) > 0) return;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if ((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000 > end) break;
    struct timespec ts = {.tv_nsec = 2000000};
    nanosleep(&ts, NULL);
  }
  fail_msg("no %s/%s* after %d ms", dir, prefix, CKL_TEST_WAIT_MS);
}

void ckl_test_wait_pausefile(const char *dir, const char *name) {
  char prefix[256];
  snprintf(prefix, sizeof prefix, "%s.hit.", name);
  ckl_test_wait_file(dir, prefix);
}

void ckl_test_release_pausefile(const char *dir, const char *name) {
  char *p = NULL;
  if (asprintf(&p, "%s/%s.go", dir, name) < 0) abort();
  ckl_test_write_file(p, "", 0);
  free(p);
}

pid_t ckl_test_fork(int (*fn)(void *), void *arg) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) abort();
  if (pid == 0) _exit(fn(arg) & 0xff);
  return pid;
}

void ckl_test_die_with_parent(void) {
  pid_t parent = getppid();
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) abort();
  if (getppid() != parent) _exit(99); /* it died before the call */
}

int ckl_test_wait(pid_t pid) {
  int status;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -errno;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

void *ckl_test_shared_alloc(size_t len) {
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) abort();
  return p;
}

void ckl_test_shared_free(void *p, size_t len) { munmap(p, len); }

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_buf[16384];

static void log_capture_cb(ckl_log_level level, const char *msg, void *ud) {
  (void)ud;
  pthread_mutex_lock(&log_mu);
  size_t n = strlen(log_buf);
  snprintf(log_buf + n, sizeof log_buf - n, "[%s] %s\n", ckl_log_level_name(level), msg);
  pthread_mutex_unlock(&log_mu);
}

void ckl_test_log_clear(void) {
  pthread_mutex_lock(&log_mu);
  log_buf[0] = '\0';
  pthread_mutex_unlock(&log_mu);
}

void ckl_test_log_env(ckl_log_level level, const char *msg, void *ud) {
  (void)ud;
  if (getenv("CKL_TEST_LOG")) fprintf(stderr, "[%s] %s\n", ckl_log_level_name(level), msg);
}

void ckl_test_log_capture(void) {
  ckl_test_log_clear();
  ckl_log_set(log_capture_cb, NULL, CKL_LOG_DEBUG);
}

int ckl_test_logged(const char *needle) {
  pthread_mutex_lock(&log_mu);
  int found = strstr(log_buf, needle) != NULL;
  pthread_mutex_unlock(&log_mu);
  return found;
}

const char *ckl_test_log_text(void) { return log_buf; }

void ckl_test_assert_logged(const char *needle) {
  if (ckl_test_logged(needle)) return;
  /* fail_msg longjmps out of the test: it must not run with log_mu held,
   * or the next test's log call deadlocks and the binary hangs. */
  static char copy[sizeof log_buf];
  pthread_mutex_lock(&log_mu);
  memcpy(copy, log_buf, sizeof copy);
  pthread_mutex_unlock(&log_mu);
  fail_msg("log lacks \"%s\"; log was:\n%s", needle, copy);
}

#include "gc_fixture.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/internal.h"
#include "datastore/state.h"
#include "datastore/store_internal.h"
#include "locks/atomic_file.h"
#include "testutil.h"

void gcfx_open(gcfx *f) {
  char *base = ckl_test_mkdtemp("gc");
  f->dir = ckl_test_path(base, "store");
  free(base);
  ckl_store_create_opts co = {.set = CKL_STORE_SET_ATIME_SAFETY | CKL_STORE_SET_MARGIN,
                              .sync = CKL_SYNC_NONE,
                              .gc_atime_safety_s = 0,
                              .gc_margin_s = 1};
  assert_int_equal(ckl_store_create(f->dir, &co), 0);
  assert_int_equal(ckl_store_open(f->dir, NULL, &f->st), 0);
}

void gcfx_close(gcfx *f) {
  /* No failpoint state outlives a test, a failed one included: a trace
   * hook left by a test that failed before removing it (loopmon's points
   * at that test's stack) would run at the next test's first hit. */
  ckl_failpoint_set_trace(NULL, NULL);
  ckl_failpoint_disarm_all();
  ckl_store_close(f->st);
  char *slash = strrchr(f->dir, '/');
  *slash = '\0';
  ckl_test_rmtree(f->dir);
  free(f->dir);
  memset(f, 0, sizeof *f);
}

int gcfx_setup(void **state) {
  ckl_log_set(ckl_test_log_env, NULL, CKL_LOG_DEBUG);
  gcfx *f = calloc(1, sizeof *f);
  gcfx_open(f);
  *state = f;
  return 0;
}

int gcfx_teardown(void **state) {
  gcfx *f = *state;
  gcfx_close(f);
  free(f);
  return 0;
}

static void content(uint32_t id, uint8_t buf[64]) {
  for (int i = 0; i < 64; i++) buf[i] = (uint8_t)((id * 2654435761u) >> (i % 24)) ^ (uint8_t)i;
  memcpy(buf, &id, sizeof id);
}

void gcfx_chunk(uint32_t id, ckl_digest *d) {
  uint8_t buf[64];
  content(id, buf);
  ckl_digest_compute(buf, sizeof buf, d);
}

void gcfx_insert(gcfx *f, uint32_t id) {
  uint8_t buf[64];
  content(id, buf);
  ckl_digest d;
  ckl_digest_compute(buf, sizeof buf, &d);
  int rc = ckl_chunk_insert(f->st->chunks, &d, buf, sizeof buf, NULL);
  assert_true(rc == CKL_INSERT_NEW || rc == CKL_INSERT_DEDUP);
}

void gcfx_snapshot(gcfx *f, const char *name, const uint32_t *ids, size_t n) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", f->dir, name);
  /* mkdir -p */
  for (char *p = path + strlen(f->dir) + 1; *p; p++) {
    if (*p == '/') {
      *p = '\0';
      mkdir(path, 0755);
      *p = '/';
    }
  }
  assert_int_equal(mkdir(path, 0755) == 0 || errno == EEXIST, 1);
  char ipath[4200];
  snprintf(ipath, sizeof ipath, "%s/data.didx", path);
  ckl_index_writer *w;
  assert_int_equal(ckl_index_writer_create(ipath, CKL_INDEX_DYNAMIC, 0, CKL_ATOMIC_NOSYNC, &w), 0);
  for (size_t i = 0; i < n; i++) {
    gcfx_insert(f, ids[i]);
    ckl_digest d;
    gcfx_chunk(ids[i], &d);
    assert_int_equal(ckl_index_writer_add(w, (i + 1) * 64, &d), 0);
  }
  ckl_digest csum;
  assert_int_equal(ckl_index_writer_commit(w, &csum), 0);
  char mpath[4200];
  snprintf(mpath, sizeof mpath, "%s/index.json", path);
  const char *m = "{\"files\":[],\"format\":1,\"unprotected\":{}}";
  ckl_test_write_file(mpath, m, strlen(m));
}

static void age_dir(int dfd, struct timespec *ts) {
  DIR *d = fdopendir(dfd);
  assert_non_null(d);
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    if (e->d_type == DT_DIR) {
      int sub = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      age_dir(sub, ts);
    } else if (e->d_type == DT_REG) {
      assert_int_equal(utimensat(dirfd(d), e->d_name, ts, 0), 0);
    }
  }
  closedir(d);
}

void gcfx_age_chunks(gcfx *f, int64_t age_s) {
  int64_t t = ckl__now_realtime_ns() / 1000000000LL - age_s;
  struct timespec ts[2] = {{.tv_sec = t}, {.tv_nsec = UTIME_OMIT}};
  int fd = open(f->st->chunks_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  age_dir(fd, ts);
}

bool gcfx_has(gcfx *f, uint32_t id) {
  ckl_digest d;
  gcfx_chunk(id, &d);
  struct stat st;
  return ckl_chunk_stat(f->st->chunks, &d, &st) == 0;
}

typedef struct mv {
  const char *from, *to;
} mv;

static int do_move(void *arg, int verdict) {
  (void)verdict;
  mv *m = arg;
  return rename(m->from, m->to) == 0 ? 0 : -errno;
}

int gcfx_forget(gcfx *f, const char *name) {
  ckl__state *state;
  assert_int_equal(ckl__state_open(f->dir, &state), 0);
  char tok[CKL_TOKEN_HEX_LEN + 1];
  assert_int_equal(ckl__random_token(tok), 0);
  char from[4096], to[4096], trash_rel[128];
  snprintf(from, sizeof from, "%s/%s", f->dir, name);
  snprintf(trash_rel, sizeof trash_rel, ".trash/%s", tok);
  snprintf(to, sizeof to, "%s/%s", f->dir, trash_rel);
  mv m = {from, to};
  int verdict = ckl__state_forget_txn(state, name, trash_rel, do_move, &m);
  assert_true(verdict == CKL__FORGET_NO_GC || verdict == CKL__FORGET_KEEP ||
              verdict == CKL__FORGET_DRY_GC);
  if (verdict != CKL__FORGET_KEEP) {
    int tfd = open(f->st->trash_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_int_equal(ckl__atomic_rmtree_at(tfd, tok), 0);
    close(tfd);
  }
  ckl__state_close(state);
  return verdict;
}

int gcfx_gc_active(gcfx *f) {
  ckl__state *state;
  assert_int_equal(ckl__state_open(f->dir, &state), 0);
  ckl__gc_info gi;
  assert_int_equal(ckl__state_gc_info(state, &gi), 0);
  ckl__state_close(state);
  return gi.active;
}

int gcfx_count_gc_leftovers(gcfx *f) {
  int n = 0;
  int fd = open(f->st->chunks_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR *d = fdopendir(fd);
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char sub[4096];
    snprintf(sub, sizeof sub, "%s/%s", f->st->chunks_path, e->d_name);
    n += ckl_test_count_entries(sub, ".gc-");
  }
  closedir(d);
  return n;
}

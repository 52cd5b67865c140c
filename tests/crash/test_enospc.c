/*
 * A full disk. As root, a small ext4 image (inline_data, so the 65,536
 * empty prefix directories of a store cost inodes, not blocks; no blocks
 * reserved for root, who would otherwise write into them) is loop-mounted
 * under the test's temp dir, or a tmpfs with size= if the loop mount is
 * not possible; a store is made there and a backup fills it:
 *
 *   - the backup reports exactly -ENOSPC at the chunk write that found the
 *     disk full, and the log names the insert's temp file and the cause;
 *   - its abort leaves nothing: no snapshot directory, no insert temp
 *     file, no index temp file, no .trash entry, no roster record;
 *   - the earlier snapshot reads back exactly, fsck is clean;
 *   - a forget and a GC still work on the full disk and free space
 *     (statvfs free blocks grow);
 *   - a new backup then succeeds and reads back exactly.
 *
 * Skipped (cmocka skip) when not root or when neither filesystem can be
 * mounted. The filesystem is unmounted on every path, failures included
 * (the teardown runs after a failed assertion too).
 */
// ctest-timeout: 120
#include "testutil.h"

#include "ops_util.h"

#include "crash_util.h"

#include <sys/mount.h>
#include <sys/statvfs.h>
#include <sys/wait.h>

#define BIG (256u * 1024u)

typedef struct fs {
  char *dir, *img, *mnt;
  bool mounted;
  const char *kind;
} fs;

static fs the_fs;
/* The store on it; closed by the teardown if the test failed midway, so
 * the unmount is never busy because of us. */
static ops_store the_store;

static int run(const char *cmd) {
  int st = system(cmd);
  return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static bool mount_ext4(fs *f) {
  char cmd[3 * PATH_MAX];
  snprintf(cmd, sizeof cmd,
           "truncate -s 48M '%s' && mkfs.ext4 -q -F -m 0 -b 1024 -I 256 -N 70000 "
           "-O inline_data '%s' >/dev/null 2>&1 && mount -o loop '%s' '%s' 2>/dev/null",
           f->img, f->img, f->img, f->mnt);
  if (run(cmd) != 0) return false;
  f->kind = "ext4";
  return true;
}

static bool mount_tmpfs(fs *f) {
  if (mount("chunklock-enospc", f->mnt, "tmpfs", 0, "size=16m,nr_inodes=100000,mode=0700") != 0)
    return false;
  f->kind = "tmpfs";
  return true;
}

static int setup(void **state) {
  (void)state;
  fs *f = &the_fs;
  memset(f, 0, sizeof *f);
  if (geteuid() != 0) return 0;
  f->dir = ckl_test_mkdtemp("enospc");
  f->img = ckl_test_path(f->dir, "fs.img");
  f->mnt = ckl_test_path(f->dir, "mnt");
  if (mkdir(f->mnt, 0700) != 0) return 0;
  f->mounted = mount_ext4(f) || mount_tmpfs(f);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  fs *f = &the_fs;
  if (the_store.st) ckl_store_close(the_store.st);
  free(the_store.path);
  memset(&the_store, 0, sizeof the_store);
  if (f->mounted && umount2(f->mnt, 0) != 0) {
    fprintf(stderr, "umount %s: %s; detaching\n", f->mnt, strerror(errno));
    umount2(f->mnt, MNT_DETACH);
  }
  f->mounted = false;
  if (f->dir) ckl_test_rmtree(f->dir);
  free(f->dir);
  free(f->img);
  free(f->mnt);
  memset(f, 0, sizeof *f);
  return 0;
}

static uint64_t free_bytes(const char *path) {
  struct statvfs sv;
  assert_int_equal(statvfs(path, &sv), 0);
  return (uint64_t)sv.f_bavail * sv.f_frsize;
}

/* Entries named prefix* in the snapshot directory tree and .chunks of the
 * store: what an abort must not leave. */
static int count_named(const char *root, const char *prefix) {
  char cmd[PATH_MAX + 128];
  snprintf(cmd, sizeof cmd, "find '%s' -name '%s*' | grep -c . ", root, prefix);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  int n = -1;
  if (fscanf(p, "%d", &n) != 1) n = -1;
  pclose(p);
  return n;
}

static void test_full_disk(void **state) {
  (void)state;
  fs *f = &the_fs;
  if (geteuid() != 0) {
    fprintf(stderr, "not root: skipped\n");
    skip();
  }
  if (!f->mounted) {
    fprintf(stderr, "cannot mount a small filesystem: skipped\n");
    skip();
  }
  fprintf(stderr, "filesystem: %s, %llu bytes free\n", f->kind,
          (unsigned long long)free_bytes(f->mnt));
  ops_store o = {0};
  the_store.path = ckl_test_path(f->mnt, "store");
  o.path = the_store.path;
  ckl_store_create_opts co = {.set = CKL_STORE_SET_ATIME_SAFETY | CKL_STORE_SET_MARGIN,
                              .sync = CKL_SYNC_FILE,
                              .compress_level = -1,
                              .gc_atime_safety_s = 0,
                              .gc_margin_s = 1};
  assert_int_equal(ckl_store_create(o.path, &co), 0);
  assert_int_equal(ckl_store_open(o.path, NULL, &o.st), 0);
  the_store.st = o.st;

  /* An earlier snapshot that must survive. */
  static const cu_snap A = {"host", "a", 0, {{"root.didx", {1, 2, 3, 4, 5}, 5}}, 1};
  assert_int_equal(cu_backup(o.st, &A, false), 0);

  /* Fill the disk with a backup of big, incompressible chunks. */
  ckl_group_name g = ops_group("host", "a");
  ckl_backup_opts bo = {.time_s = OPS_T0 + 10};
  ckl_backup *b;
  assert_int_equal(ckl_backup_begin(o.st, &g, &bo, &b), 0);
  ckl_backup_archive *a;
  assert_int_equal(ckl_backup_archive_open(b, "big.didx", 0, &a), 0);
  unsigned char *buf = malloc(BIG);
  assert_non_null(buf);
  ckl_digest *written = calloc(4096, sizeof *written);
  size_t nwritten = 0;
  int rc = 0;
  ckl_test_log_capture();
  for (uint32_t k = 0; k < 4096; k++) {
    ops_fill(buf, BIG, 5000 + k);
    ckl_test_log_clear();
    rc = ckl_backup_archive_write_chunk(a, buf, BIG, &written[nwritten]);
    if (rc < 0) break;
    nwritten++;
  }
  /* The layer that meets the full disk is the chunk insert's write of
   * its temp file; the error names that file and the cause. */
  assert_int_equal(rc, -ENOSPC);
  assert_true(nwritten > 10);
  ckl_test_assert_logged("/.tmp-");
  ckl_test_assert_logged("No space left on device");
  fprintf(stderr, "disk full after %zu chunks; log:\n%s", nwritten, ckl_test_log_text());
  /* Then to the last block, with small chunks: the abort, the forget and
   * the GC below must work on a disk with no free block at all. */
  size_t nbig = nwritten;
  for (uint32_t k = 0; k < 4096 - nbig; k++) {
    ops_fill(buf, 1000, 90000 + k);
    rc = ckl_backup_archive_write_chunk(a, buf, 1000, &written[nwritten]);
    if (rc < 0) break;
    nwritten++;
  }
  assert_int_equal(rc, -ENOSPC);
  fprintf(stderr, "%zu small chunks more; %llu bytes free\n", nwritten - nbig,
          (unsigned long long)free_bytes(f->mnt));
  ckl_backup_archive_abort(a);
  ckl_test_log_clear();
  ckl_backup_abort(b);
  fprintf(stderr, "abort log:\n%s", ckl_test_log_text());
  ckl_log_set(NULL, NULL, CKL_LOG_ERROR);

  /* Nothing half-written stays. */
  ckl_snapshot_name bn = ops_snap("host", "a", OPS_T0 + 10);
  assert_false(ops_snap_exists(&o, &bn));
  assert_int_equal(count_named(o.path, ".tmp-"), 0);
  assert_int_equal(count_named(o.path, ".big.didx"), 0);
  assert_int_equal(ops_trash_count(&o), 0);
  assert_int_equal(cu_roster_count(&o), 0);
  assert_int_equal(cu_read_back(o.st, &A), 0);
  assert_int_equal(cu_fsck(&o, 0), 0);

  /* Forget and GC on the full disk free the space. The aborted backup's
   * chunks are garbage, but were written just now: time passes for them
   * (and for A's, forgotten below). */
  uint64_t before = free_bytes(f->mnt);
  ckl_snapshot_name an = cu_name(&A);
  assert_int_equal(ckl_forget(o.st, &an, NULL), CKL_FORGET_DELETED);
  for (size_t i = 0; i < nwritten; i++) {
    char *p = ops_chunk_path(&o, &written[i]);
    struct timeval tv[2] = {{time(NULL) - 3600, 0}, {time(NULL) - 3600, 0}};
    assert_int_equal(utimes(p, tv), 0);
    free(p);
  }
  for (uint32_t s = 1; s <= 5; s++) cu_age_chunk(&o, s, 3600);
  ckl_gc_opts go = {.use_safety = 1, .atime_safety_s = 0};
  ckl_gc_result r;
  assert_int_equal(ckl_gc_run(o.st, &go, &r), 0);
  assert_int_equal(r.removed_chunks, nwritten + 5);
  uint64_t after = free_bytes(f->mnt);
  fprintf(stderr, "free: %llu -> %llu bytes\n", (unsigned long long)before,
          (unsigned long long)after);
  assert_true(after >= before + (uint64_t)nbig * BIG);

  /* And a new backup succeeds. */
  static const cu_snap C = {"host", "a", 20, {{"root.didx", {7, 8, 9}, 3}}, 1};
  assert_int_equal(cu_backup(o.st, &C, false), 0);
  assert_int_equal(cu_read_back(o.st, &C), 0);
  assert_int_equal(cu_fsck(&o, 0), 0);

  free(written);
  free(buf);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_full_disk, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

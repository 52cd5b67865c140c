/*
 * tools/cmd_restore.c - `chunklock restore STORE SNAPSHOT DEST`.
 *
 * Reads the snapshot through a ckl_reader (snapshot lock shared: it cannot
 * be forgotten meanwhile, so no GC removes its chunks), loads the catalog,
 * and recreates its entries under DEST in catalog order (a directory before
 * its contents): files byte for byte (runs of zeros become holes), then
 * symlinks, modes and mtimes; directories get their modes and mtimes last,
 * deepest first, since creating their contents changes them.
 *
 * The catalog is data from the store, so it is not trusted: every path is
 * checked (relative, no "." or ".." component), every directory on the way
 * is opened with O_NOFOLLOW relative to DEST, and files are created with
 * O_EXCL|O_NOFOLLOW, so no entry can write outside DEST, even through a
 * symlink the same restore created.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/internal.h"
#include "tools/catalog.h"
#include "tools/cli.h"

static const char usage_text[] =
    "usage: chunklock restore STORE SNAPSHOT DEST [--json]\n\n"
    "Restores the files, directories and symlinks of SNAPSHOT (TYPE/ID/TIME,\n"
    "made by 'chunklock backup') under DEST, which must not exist or be empty:\n"
    "byte-identical contents, modes, mtimes and symlink targets. While it runs\n"
    "the snapshot cannot be forgotten (forget exits 3 naming the restore).\n";

#define IO_BLOCK (1u << 20)
#define HOLE_BLOCK 4096u

typedef struct rs {
  ckl_reader *r;
  int destfd;
  uint8_t *buf;
  uint64_t total, done, files, dirs, symlinks;
  cli_progress p;
} rs;

/* Open the directory that holds `path`'s last component, walking from
 * DEST with O_NOFOLLOW. Returns the fd and *leaf, or -errno. */
static int open_parent(int destfd, const char *path, const char **leaf) {
  int fd = dup(destfd);
  if (fd < 0) return -errno;
  const char *s = path;
  for (;;) {
    const char *slash = strchr(s, '/');
    if (!slash) {
      *leaf = s;
      return fd;
    }
    char comp[256];
    size_t n = (size_t)(slash - s);
    if (n >= sizeof comp) {
      close(fd);
      return -ENAMETOOLONG;
    }
    memcpy(comp, s, n);
    comp[n] = '\0';
    int nfd = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int err = errno;
    close(fd);
    if (nfd < 0) return -err;
    fd = nfd;
    s = slash + 1;
  }
}

static bool all_zero(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return false;
  return true;
}

static int restore_file(rs *x, const cat_entry *e, int pfd, const char *leaf) {
  int fd = openat(pfd, leaf, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return -errno;
  int rc = 0;
  if (e->archive) {
    ckl_reader_archive *a = NULL;
    rc = ckl_reader_archive_open(x->r, e->archive, &a);
    if (rc == 0 && ckl_reader_archive_size(a) != e->size) {
      cli_msg("%s: archive %s holds %" PRIu64 " bytes, the catalog says %" PRIu64, e->path,
              e->archive, ckl_reader_archive_size(a), e->size);
      rc = CKL_ECORRUPT;
    }
    uint64_t off = 0;
    while (rc == 0 && off < e->size) {
      ssize_t n = ckl_reader_archive_read(a, off, x->buf, IO_BLOCK);
      if (n <= 0) {
        rc = n < 0 ? (int)n : CKL_ECORRUPT;
        break;
      }
      /* Holes for whole zero blocks: the file reads the same, and a
       * sparse file stays sparse. ftruncate below sets the final size. */
      for (size_t k = 0; rc == 0 && k < (size_t)n; k += HOLE_BLOCK) {
        size_t len = (size_t)n - k < HOLE_BLOCK ? (size_t)n - k : HOLE_BLOCK;
        if (len == HOLE_BLOCK && all_zero(x->buf + k, len)) {
          if (lseek(fd, (off_t)len, SEEK_CUR) < 0) rc = -errno;
        } else {
          rc = ckl__write_all(fd, x->buf + k, len);
        }
      }
      off += (uint64_t)n;
      x->done += (uint64_t)n;
      cli_progress_update(&x->p, x->done, e->path);
    }
    if (a) ckl_reader_archive_close(a);
  }
  if (rc == 0 && ftruncate(fd, (off_t)e->size) != 0) rc = -errno;
  if (rc == 0 && fchmod(fd, (mode_t)e->mode) != 0) rc = -errno;
  struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT},
                           {.tv_sec = e->mtime_ns / 1000000000LL,
                            .tv_nsec = e->mtime_ns % 1000000000LL}};
  if (rc == 0 && futimens(fd, ts) != 0) rc = -errno;
  if (close(fd) != 0 && rc == 0) rc = -errno;
  return rc;
}

static void split_ns(int64_t ns, struct timespec *ts) {
  ts->tv_sec = ns / 1000000000LL;
  ts->tv_nsec = ns % 1000000000LL;
  if (ts->tv_nsec < 0) {
    ts->tv_sec--;
    ts->tv_nsec += 1000000000LL;
  }
}

static int restore_entry(rs *x, const cat_entry *e) {
  const char *leaf;
  int pfd = open_parent(x->destfd, e->path, &leaf);
  if (pfd < 0) return pfd;
  int rc = 0;
  if (e->type == CAT_DIR) {
    /* 0700 until the end: its contents are still to be created */
    if (mkdirat(pfd, leaf, 0700) != 0) rc = -errno;
    x->dirs++;
  } else if (e->type == CAT_SYMLINK) {
    if (symlinkat(e->target, pfd, leaf) != 0) rc = -errno;
    struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}};
    split_ns(e->mtime_ns, &ts[1]);
    if (rc == 0 && utimensat(pfd, leaf, ts, AT_SYMLINK_NOFOLLOW) != 0) rc = -errno;
    x->symlinks++;
  } else {
    rc = restore_file(x, e, pfd, leaf);
    x->files++;
  }
  close(pfd);
  return rc;
}

/* Modes and mtimes of directories, deepest (latest in pre-order) first. */
static int finish_dirs(rs *x, const catalog *c) {
  for (size_t i = c->n; i-- > 0;) {
    const cat_entry *e = &c->v[i];
    if (e->type != CAT_DIR) continue;
    const char *leaf;
    int pfd = open_parent(x->destfd, e->path, &leaf);
    if (pfd < 0) return pfd;
    int rc = 0;
    struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}};
    split_ns(e->mtime_ns, &ts[1]);
    if (fchmodat(pfd, leaf, (mode_t)e->mode, 0) != 0) rc = -errno;
    if (rc == 0 && utimensat(pfd, leaf, ts, AT_SYMLINK_NOFOLLOW) != 0) rc = -errno;
    close(pfd);
    if (rc < 0) {
      cli_msg("cannot set mode/mtime of %s: %s", e->path, strerror(-rc));
      return rc;
    }
  }
  return 0;
}

static int load_catalog(ckl_reader *r, catalog *c) {
  ckl_reader_archive *a;
  int rc = ckl_reader_archive_open(r, CAT_ARCHIVE, &a);
  if (rc == -ENOENT) {
    cli_msg("the snapshot has no %s: it was not made by 'chunklock backup'", CAT_ARCHIVE);
    return rc;
  }
  if (rc < 0) return rc;
  uint64_t n = ckl_reader_archive_size(a);
  char *txt = n < (1ull << 32) ? malloc(n + 1) : NULL;
  if (!txt) rc = -ENOMEM;
  else if (ckl_reader_archive_read(a, 0, txt, n) != (ssize_t)n) rc = CKL_ECORRUPT;
  ckl_reader_archive_close(a);
  json_error_t jerr;
  json_t *j = rc == 0 ? json_loadb(txt, n, JSON_REJECT_DUPLICATES, &jerr) : NULL;
  free(txt);
  if (rc == 0 && !j) {
    cli_msg("the catalog is not valid JSON: %s (line %d)", jerr.text, jerr.line);
    rc = CKL_ECORRUPT;
  }
  char why[160] = "";
  if (rc == 0) rc = cat_from_json(j, c, why, sizeof why);
  if (why[0]) cli_msg("the catalog is damaged: %s", why);
  json_decref(j);
  return rc;
}

/* DEST must not exist (it is created) or be an empty directory. */
static int open_dest(const char *dest) {
  if (mkdir(dest, 0700) != 0 && errno != EEXIST) return -errno;
  int fd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  int probe = dup(fd);
  DIR *d = probe >= 0 ? fdopendir(probe) : NULL;
  if (!d) {
    close(probe);
    close(fd);
    return -ENOMEM;
  }
  struct dirent *e;
  int rc = 0;
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) rc = -ENOTEMPTY;
  closedir(d);
  if (rc < 0) {
    close(fd);
    return rc;
  }
  return fd;
}

int cli_cmd_restore(int argc, char **argv) {
  enum { OPT_JSON = 1 };
  static const struct option lo[] = {{"json", no_argument, NULL, OPT_JSON},
                                     {"help", no_argument, NULL, 'h'},
                                     {0}};
  int json = 0, c;
  while ((c = cli_getopt(argc, argv, "h", lo)) != -1) {
    if (c == -2) return CLI_EXIT_USAGE;
    if (c == 'h') {
      fputs(usage_text, stdout);
      return CLI_EXIT_OK;
    }
    if (c == OPT_JSON) json = 1;
  }
  if (argc - cli_optind != 3) return cli_usage_error("expected STORE SNAPSHOT DEST");
  ckl_snapshot_name sn;
  if (cli_parse_snapshot(argv[cli_optind + 1], &sn) < 0) return CLI_EXIT_USAGE;
  const char *dest = argv[cli_optind + 2];
  ckl_store *st;
  int ec = cli_open_store(argv[cli_optind], &st);
  if (ec) return ec;
  rs x = {.destfd = -1};
  catalog cat = {0};
  ckl_holder who = {0};
  ckl_reader_opts ro = {.busy_holder = &who};
  int rc = ckl_reader_open(st, &sn, &ro, &x.r);
  if (rc < 0) {
    ec = cli_fail(rc, &who, "cannot read %s", argv[cli_optind + 1]);
    goto out;
  }
  rc = load_catalog(x.r, &cat);
  if (rc < 0) {
    ec = cli_fail(rc, NULL, "cannot read the catalog of %s", argv[cli_optind + 1]);
    goto out;
  }
  x.destfd = open_dest(dest);
  if (x.destfd < 0) {
    rc = x.destfd;
    ec = cli_fail(rc, NULL, "cannot restore into %s%s", dest,
                  rc == -ENOTEMPTY ? " (it must not exist or be empty)" : "");
    goto out;
  }
  x.buf = malloc(IO_BLOCK);
  if (!x.buf) {
    ec = cli_fail(-ENOMEM, NULL, "restore");
    goto out;
  }
  for (size_t i = 0; i < cat.n; i++) x.total += cat.v[i].size;
  cli_progress_start(&x.p, "restore", x.total ? x.total : 1);
  for (size_t i = 0; rc == 0 && i < cat.n; i++) {
    rc = restore_entry(&x, &cat.v[i]);
    if (rc < 0) cli_fail(rc, NULL, "cannot restore %s", cat.v[i].path);
  }
  cli_progress_end(&x.p);
  if (rc == 0) rc = finish_dirs(&x, &cat);
  if (rc < 0) {
    ec = cli_exit_code(rc);
    goto out;
  }
  if (json) {
    json_t *o = json_object();
    cli_json_set(o, "snapshot", json_string(argv[cli_optind + 1]));
    cli_json_set(o, "dest", json_string(dest));
    cli_json_set(o, "files", json_integer((json_int_t)x.files));
    cli_json_set(o, "dirs", json_integer((json_int_t)x.dirs));
    cli_json_set(o, "symlinks", json_integer((json_int_t)x.symlinks));
    cli_json_set(o, "bytes", json_integer((json_int_t)x.done));
    cli_json_print(o);
  } else {
    char b[32];
    cli_format_bytes(x.done, b, sizeof b);
    printf("restored %" PRIu64 " files (%s), %" PRIu64 " directories, %" PRIu64
           " symlinks into %s\n", x.files, b, x.dirs, x.symlinks, dest);
  }
out:
  free(x.buf);
  if (x.destfd >= 0) close(x.destfd);
  cat_free(&cat);
  if (x.r) ckl_reader_close(x.r);
  ckl_store_close(st);
  return ec;
}

/*
 * tools/cmd_backup.c - `chunklock backup STORE TYPE/ID PATH... [--time T]`.
 *
 * Two passes. The scan walks every PATH (lstat, never following a
 * symlink, directory entries sorted by name) into a catalog in pre-order;
 * then each regular file is chunked with FastCDC into its own dynamic
 * index "f<N>.didx", and the catalog itself goes in as "catalog.didx"
 * (tools/catalog.h). The snapshot is published by ckl_backup_finish only
 * when everything was written: any error aborts the session, which
 * removes the partial snapshot.
 *
 * Unchanged files are not read again: when the group's newest snapshot
 * (the base, held shared by the session) lists the same path with the same
 * size, mtime, ctime and inode, its chunks are reused by touching them
 * (ckl_backup_reuse_chunk). A chunk a GC swept meanwhile answers -ENOENT;
 * the file is then read from that chunk's offset on and chunked afresh.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tools/catalog.h"
#include "tools/cli.h"

static const char usage_text[] =
    "usage: chunklock backup STORE TYPE/ID PATH... [--time RFC3339] [--chunk-size SIZE]\n"
    "                        [--full] [--json]\n\n"
    "Backs up files and directories (regular files, directories and symlinks,\n"
    "with modes and mtimes) into a new snapshot TYPE/ID/TIME of the group TYPE/ID,\n"
    "and prints the snapshot name as the last line of stdout. Each PATH is stored\n"
    "under its base name. Data is split by content-defined chunking and stored\n"
    "once: chunks already in the store are only touched.\n"
    "  --time RFC3339     the snapshot time (default: now), e.g. 2026-01-31T12:00:00Z\n"
    "  --chunk-size SIZE  average chunk size, a power of two in [4K, 4M]\n"
    "                     (default: the store's, 1M unless set at init)\n"
    "  --full             read every file, even one unchanged since the last snapshot\n"
    "  --json             print a JSON report (which names the snapshot) instead\n";

typedef struct bk {
  ckl_store *st;
  ckl_backup *b;
  ckl_cdc cdc;
  uint8_t *buf;
  catalog cat;
  catalog base;          /* the base snapshot's catalog (empty if none) */
  char base_dir[4096];
  uint64_t total, done;  /* bytes of regular files, for the progress bar */
  uint64_t files, dirs, symlinks, skipped, reused_files;
  uint64_t new_chunks, dedup_chunks, reused_chunks;
  cli_progress p;
} bk;

/* ---- pass 1: scan ---------------------------------------------------------- */

static int64_t ns_of(struct timespec ts) { return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec; }

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int scan(bk *k, const char *fs, const char *rel);

static int scan_dir(bk *k, const char *fs, const char *rel) {
  DIR *d = opendir(fs);
  if (!d) {
    if (errno == ENOENT) return 0; /* vanished since lstat */
    int rc = -errno;
    cli_msg("cannot read directory %s: %s", fs, strerror(errno));
    return rc;
  }
  char **names = NULL;
  size_t n = 0, cap = 0;
  int rc = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 32;
      char **v = realloc(names, cap * sizeof *v);
      if (!v) {
        rc = -ENOMEM;
        break;
      }
      names = v;
    }
    if (!(names[n] = strdup(e->d_name))) {
      rc = -ENOMEM;
      break;
    }
    n++;
  }
  closedir(d);
  if (rc == 0 && n > 0) qsort(names, n, sizeof *names, cmp_names); /* names is NULL when empty */
  for (size_t i = 0; rc == 0 && i < n; i++) {
    size_t fl = strlen(fs) + strlen(names[i]) + 2, rl = strlen(rel) + strlen(names[i]) + 2;
    char *cf = malloc(fl), *cr = malloc(rl);
    if (!cf || !cr) {
      rc = -ENOMEM;
    } else {
      snprintf(cf, fl, "%s/%s", fs, names[i]);
      snprintf(cr, rl, "%s/%s", rel, names[i]);
      rc = scan(k, cf, cr);
    }
    free(cf);
    free(cr);
  }
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
  return rc;
}

static int scan(bk *k, const char *fs, const char *rel) {
  struct stat sb;
  if (lstat(fs, &sb) != 0) {
    if (errno == ENOENT) return 0;
    int rc = -errno;
    cli_msg("cannot stat %s: %s", fs, strerror(errno));
    return rc;
  }
  cat_entry e = {.path = (char *)rel, .mode = sb.st_mode & 07777, .mtime_ns = ns_of(sb.st_mtim)};
  char target[4097];
  if (S_ISDIR(sb.st_mode)) {
    e.type = CAT_DIR;
  } else if (S_ISREG(sb.st_mode)) {
    e.type = CAT_FILE;
    e.size = (uint64_t)sb.st_size;
    e.ino = (uint64_t)sb.st_ino;
    e.ctime_ns = ns_of(sb.st_ctim);
    k->total += e.size;
  } else if (S_ISLNK(sb.st_mode)) {
    ssize_t n = readlink(fs, target, sizeof target - 1);
    if (n < 0) {
      int rc = -errno;
      cli_msg("cannot read symlink %s: %s", fs, strerror(errno));
      return rc;
    }
    target[n] = '\0';
    e.type = CAT_SYMLINK;
    e.target = target;
  } else {
    cli_msg("warning: skipping %s: not a regular file, directory or symlink", fs);
    k->skipped++;
    return 0;
  }
  int rc = cat_add(&k->cat, &e);
  if (rc == 0 && e.type == CAT_DIR) rc = scan_dir(k, fs, rel);
  return rc;
}

/* ---- pass 2: file data ------------------------------------------------------ */

static int count_insert(bk *k, int rc) {
  if (rc == CKL_INSERT_NEW) k->new_chunks++;
  else if (rc == CKL_INSERT_DEDUP) k->dedup_chunks++;
  return rc < 0 ? rc : 0;
}

/* Chunk fd from its current offset to EOF into archive a. *size counts the
 * bytes read. */
static int chunk_stream(bk *k, int fd, ckl_backup_archive *a, const char *fs, uint64_t *size) {
  size_t have = 0;
  bool eof = false;
  for (;;) {
    while (!eof && have < k->cdc.max_size) {
      ssize_t n = read(fd, k->buf + have, k->cdc.max_size - have);
      if (n < 0) {
        if (errno == EINTR) continue;
        int rc = -errno;
        cli_msg("cannot read %s: %s", fs, strerror(errno));
        return rc;
      }
      if (n == 0) eof = true;
      have += (size_t)n;
    }
    if (have == 0) return 0;
    size_t cut = ckl_cdc_next(&k->cdc, k->buf, have);
    int rc = count_insert(k, ckl_backup_archive_write_chunk(a, k->buf, cut, NULL));
    if (rc < 0) return rc;
    *size += cut;
    k->done += cut;
    cli_progress_update(&k->p, k->done, NULL);
    memmove(k->buf, k->buf + cut, have - cut);
    have -= cut;
  }
}

/* Reuse the base's chunks of an unchanged file. Returns 1 when every chunk
 * was reused, 0 when the caller must chunk the file from *resume_off on
 * (a chunk is gone, or the base index is unreadable), or an error. */
static int reuse_from_base(bk *k, const cat_entry *be, ckl_backup_archive *a,
                           uint64_t *resume_off) {
  char path[4400];
  snprintf(path, sizeof path, "%s/%s", k->base_dir, be->archive);
  ckl_index *ix;
  *resume_off = 0;
  if (ckl_index_open(path, &ix) < 0) return 0;
  int rc = 1;
  for (size_t i = 0; i < ckl_index_count(ix); i++) {
    uint64_t s, e;
    const ckl_digest *d = ckl_index_digest(ix, i);
    if (ckl_index_range(ix, i, &s, &e) < 0 || !d) {
      rc = 0;
      break;
    }
    int r = ckl_backup_reuse_chunk(k->b, d);
    if (r == -ENOENT) { /* swept by a GC before we touched it: read it */
      rc = 0;
      break;
    }
    if (r == 0) r = ckl_backup_archive_append(a, d, e - s);
    if (r < 0) {
      rc = r;
      break;
    }
    k->reused_chunks++;
    *resume_off = e;
    k->done += e - s;
  }
  ckl_index_close(ix);
  return rc;
}

static int backup_file(bk *k, cat_entry *e, const char *fs) {
  int fd = open(fs, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) { /* vanished since the scan: back it up as empty */
      cli_msg("warning: %s vanished during the backup", fs);
      e->size = 0;
      return 0;
    }
    int rc = -errno;
    cli_msg("cannot open %s: %s", fs, strerror(errno));
    return rc;
  }
  char name[32];
  snprintf(name, sizeof name, "f%08" PRIu64 ".didx", ++k->files);
  cli_progress_update(&k->p, k->done, e->path);
  ckl_backup_archive *a = NULL;
  int rc = e->size ? ckl_backup_archive_open(k->b, name, 0, &a) : 0;
  if (rc < 0) {
    close(fd);
    cli_fail(rc, NULL, "cannot open archive %s for %s", name, fs);
    return rc;
  }
  uint64_t size = 0;
  const cat_entry *be = k->base.n ? cat_find(&k->base, e->path) : NULL;
  if (a && be && be->type == CAT_FILE && be->archive && be->size == e->size &&
      be->mtime_ns == e->mtime_ns && be->ctime_ns == e->ctime_ns && be->ino == e->ino) {
    uint64_t off = 0;
    rc = reuse_from_base(k, be, a, &off);
    if (rc == 1) {
      k->reused_files++;
      size = e->size;
    } else if (rc == 0 && lseek(fd, (off_t)off, SEEK_SET) != (off_t)off) {
      rc = -errno;
    } else if (rc == 0) {
      size = off;
      rc = chunk_stream(k, fd, a, fs, &size);
    }
  } else if (a) {
    rc = chunk_stream(k, fd, a, fs, &size);
  }
  close(fd);
  if (rc < 0) {
    ckl_backup_archive_abort(a);
    return rc;
  }
  if (a && size == 0) { /* truncated to empty since the scan */
    ckl_backup_archive_abort(a);
    a = NULL;
  }
  if (a) {
    rc = ckl_backup_archive_close(a);
    if (rc < 0) return rc;
    e->archive = strdup(name);
    if (!e->archive) return -ENOMEM;
  }
  e->size = size;
  return 0;
}

/* The catalog's bytes, chunked like a file. */
static int write_catalog(bk *k) {
  json_t *j = cat_to_json(&k->cat);
  char *txt = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
  json_decref(j);
  if (!txt) return -ENOMEM;
  size_t len = strlen(txt), off = 0;
  ckl_backup_archive *a;
  int rc = ckl_backup_archive_open(k->b, CAT_ARCHIVE, 0, &a);
  while (rc == 0 && off < len) {
    size_t cut = ckl_cdc_next(&k->cdc, txt + off, len - off);
    rc = count_insert(k, ckl_backup_archive_write_chunk(a, txt + off, cut, NULL));
    off += cut;
  }
  free(txt);
  if (rc < 0) {
    ckl_backup_archive_abort(a);
    return rc;
  }
  return ckl_backup_archive_close(a);
}

/* The base snapshot's catalog, if it has one; failures only cost reuse. */
static void load_base(bk *k) {
  const ckl_snapshot_name *base = ckl_backup_base(k->b);
  if (!base || ckl_snapshot_path(k->st, base, k->base_dir, sizeof k->base_dir) < 0) return;
  ckl_reader *r;
  if (ckl_reader_open(k->st, base, NULL, &r) < 0) return;
  ckl_reader_archive *a;
  if (ckl_reader_archive_open(r, CAT_ARCHIVE, &a) == 0) {
    uint64_t n = ckl_reader_archive_size(a);
    char *txt = n < (1ull << 32) ? malloc(n + 1) : NULL;
    if (txt && ckl_reader_archive_read(a, 0, txt, n) == (ssize_t)n) {
      json_t *j = json_loadb(txt, n, 0, NULL);
      char why[128];
      if (j && cat_from_json(j, &k->base, why, sizeof why) < 0) memset(&k->base, 0, sizeof k->base);
      json_decref(j);
    }
    free(txt);
    ckl_reader_archive_close(a);
  }
  ckl_reader_close(r);
}

/* ---- the command ------------------------------------------------------------- */

static int parse_time(const char *s, int64_t *out);

static const char *base_name(const char *p, char *buf, size_t len) {
  size_t n = strlen(p);
  while (n > 1 && p[n - 1] == '/') n--;
  size_t start = n;
  while (start > 0 && p[start - 1] != '/') start--;
  snprintf(buf, len, "%.*s", (int)(n - start), p + start);
  return buf;
}

/* Scan, back up, publish. Returns the exit code; messages are printed. */
static int run(bk *k, char **paths, int npaths, const ckl_group_name *g, int64_t time_s,
               int full, json_t **report, char *snap_out) {
  for (int i = 0; i < npaths; i++) {
    char nb[4096];
    const char *name = base_name(paths[i], nb, sizeof nb);
    if (!cat_path_ok(name) || strchr(name, '/'))
      return cli_usage_error("cannot back up '%s': it has no usable base name (give its "
                             "contents, or a path ending in a name)", paths[i]);
    for (size_t r = 0; r < k->cat.nroots; r++)
      if (!strcmp(k->cat.roots[r], name))
        return cli_usage_error("two PATHs have the same base name '%s'", name);
    struct stat sb;
    if (lstat(paths[i], &sb) != 0) return cli_fail(-errno, NULL, "cannot back up %s", paths[i]);
    int rc = cat_add_root(&k->cat, name);
    if (rc == 0) rc = scan(k, paths[i], name);
    if (rc < 0) return rc == -ENOMEM ? cli_fail(rc, NULL, "scanning") : cli_exit_code(rc);
  }
  ckl_holder who = {0};
  ckl_backup_opts bo = {.time_s = time_s, .flags = full ? 0 : CKL_BACKUP_BASE_LATEST,
                        .busy_holder = &who};
  int rc = ckl_backup_begin(k->st, g, &bo, &k->b);
  /* Snapshot times are whole seconds: a second backup of the group within
   * the same second (no --time given) waits for the next one. */
  for (int retry = 0; rc == -EEXIST && time_s == 0 && retry < 2; retry++) {
    int64_t now = cli_wall_ns();
    struct timespec ts = {0, (long)(1000000000LL - now % 1000000000LL)};
    nanosleep(&ts, NULL);
    rc = ckl_backup_begin(k->st, g, &bo, &k->b);
  }
  if (rc == -EEXIST)
    return cli_fail(rc, NULL, "a snapshot of %s/%s at that time exists", g->type, g->id);
  if (rc < 0) return cli_fail(rc, &who, "cannot start a backup of %s/%s", g->type, g->id);
  ckl_snapshot_name_format(ckl_backup_snapshot(k->b), snap_out, CKL_SNAP_NAME_MAX + 1);
  if (!full) load_base(k);
  cli_progress_start(&k->p, "backup", k->total ? k->total : 1);
  for (size_t i = 0; rc == 0 && i < k->cat.n; i++) {
    cat_entry *e = &k->cat.v[i];
    if (e->type == CAT_DIR) k->dirs++;
    if (e->type == CAT_SYMLINK) k->symlinks++;
    if (e->type != CAT_FILE) continue;
    /* the fs path: the PATH given for the root, then the rest */
    const char *slash = strchr(e->path, '/');
    size_t rootlen = slash ? (size_t)(slash - e->path) : strlen(e->path);
    const char *root_fs = NULL;
    for (int r = 0; r < npaths; r++)
      if (strlen(k->cat.roots[r]) == rootlen && !strncmp(k->cat.roots[r], e->path, rootlen))
        root_fs = paths[r];
    size_t fl = strlen(root_fs) + strlen(e->path) + 2;
    char *fs = malloc(fl);
    if (!fs) {
      rc = -ENOMEM;
      break;
    }
    snprintf(fs, fl, "%s%s", root_fs, slash ? slash : "");
    rc = backup_file(k, e, fs);
    free(fs);
  }
  cli_progress_end(&k->p);
  if (rc == 0) rc = write_catalog(k);
  if (rc < 0) {
    ckl_backup_abort(k->b);
    k->b = NULL;
    return cli_fail(rc, NULL, "backup of %s/%s failed; nothing was published", g->type, g->id);
  }
  rc = ckl_backup_finish(k->b);
  k->b = NULL;
  if (rc < 0) return cli_fail(rc, NULL, "cannot finish the backup %s", snap_out);
  json_t *o = json_object();
  cli_json_set(o, "snapshot", json_string(snap_out));
  cli_json_set(o, "files", json_integer((json_int_t)k->files));
  cli_json_set(o, "dirs", json_integer((json_int_t)k->dirs));
  cli_json_set(o, "symlinks", json_integer((json_int_t)k->symlinks));
  cli_json_set(o, "skipped", json_integer((json_int_t)k->skipped));
  cli_json_set(o, "bytes", json_integer((json_int_t)k->done));
  cli_json_set(o, "new_chunks", json_integer((json_int_t)k->new_chunks));
  cli_json_set(o, "dedup_chunks", json_integer((json_int_t)k->dedup_chunks));
  cli_json_set(o, "reused_chunks", json_integer((json_int_t)k->reused_chunks));
  cli_json_set(o, "unchanged_files", json_integer((json_int_t)k->reused_files));
  *report = o;
  return CLI_EXIT_OK;
}

int cli_cmd_backup(int argc, char **argv) {
  enum { OPT_TIME = 1, OPT_CHUNK, OPT_FULL, OPT_JSON };
  static const struct option lo[] = {{"time", required_argument, NULL, OPT_TIME},
                                     {"chunk-size", required_argument, NULL, OPT_CHUNK},
                                     {"full", no_argument, NULL, OPT_FULL},
                                     {"json", no_argument, NULL, OPT_JSON},
                                     {"help", no_argument, NULL, 'h'},
                                     {0}};
  int json = 0, full = 0, c;
  int64_t time_s = 0;
  uint64_t avg = 0;
  while ((c = cli_getopt(argc, argv, "h", lo)) != -1) {
    switch (c) {
    case -2: return CLI_EXIT_USAGE;
    case 'h': fputs(usage_text, stdout); return CLI_EXIT_OK;
    case OPT_JSON: json = 1; break;
    case OPT_FULL: full = 1; break;
    case OPT_TIME:
      if (parse_time(cli_optarg, &time_s) < 0)
        return cli_usage_error("--time: '%s' is not an RFC 3339 time", cli_optarg);
      if (time_s <= 0) return cli_usage_error("--time must be after 1970");
      break;
    case OPT_CHUNK:
      if (cli_parse_size("--chunk-size", cli_optarg, &avg) < 0) return CLI_EXIT_USAGE;
      if (avg < 4096 || avg > CKL_CDC_MAX_AVG || (avg & (avg - 1)))
        return cli_usage_error("--chunk-size must be a power of two in [4K, 4M]");
      break;
    default: break;
    }
  }
  if (argc - cli_optind < 3) return cli_usage_error("expected STORE TYPE/ID PATH...");
  ckl_group_name g;
  if (cli_parse_group(argv[cli_optind + 1], &g) < 0) return CLI_EXIT_USAGE;
  ckl_store *st;
  int ec = cli_open_store(argv[cli_optind], &st);
  if (ec) return ec;
  bk k = {.st = st};
  if (!avg) avg = ckl_store_get_config(st)->chunk_average_size;
  ckl_cdc_init(&k.cdc, (uint32_t)avg);
  k.cat.avg = k.cdc.avg_size;
  k.cat.min = k.cdc.min_size;
  k.cat.max = k.cdc.max_size;
  k.cat.created_ns = cli_wall_ns();
  k.buf = malloc(k.cdc.max_size);
  json_t *report = NULL;
  char snap[CKL_SNAP_NAME_MAX + 1] = "";
  ec = k.buf ? run(&k, argv + cli_optind + 2, argc - cli_optind - 2, &g, time_s, full, &report,
                   snap)
             : cli_fail(-ENOMEM, NULL, "backup");
  free(k.buf);
  cat_free(&k.cat);
  cat_free(&k.base);
  ckl_store_close(st);
  if (ec) return ec;
  if (json) {
    cli_json_print(report);
  } else {
    json_decref(report);
    printf("%s\n", snap);
  }
  return CLI_EXIT_OK;
}

/* RFC 3339: YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM); 't', 'z' and a
 * space for 'T' accepted. Fractions are dropped (snapshot times are whole
 * seconds). */
static int parse_time(const char *s, int64_t *out) {
  size_t n = strlen(s);
  if (n < 20) return -1;
  char canon[CKL_SNAP_TIME_LEN + 1];
  memcpy(canon, s, 19);
  if (canon[10] == 't' || canon[10] == ' ') canon[10] = 'T';
  canon[19] = 'Z';
  canon[20] = '\0';
  int64_t t;
  if (ckl_snapshot_time_parse(canon, CKL_SNAP_TIME_LEN, &t) < 0) return -1;
  const char *p = s + 19;
  if (*p == '.') {
    p++;
    if (*p < '0' || *p > '9') return -1;
    while (*p >= '0' && *p <= '9') p++;
  }
  if ((*p == 'Z' || *p == 'z') && p[1] == '\0') {
    *out = t;
    return 0;
  }
  if ((*p != '+' && *p != '-') || strlen(p) != 6 || p[3] != ':') return -1;
  for (int i = 1; i < 6; i++)
    if (i != 3 && (p[i] < '0' || p[i] > '9')) return -1;
  int hh = (p[1] - '0') * 10 + (p[2] - '0'), mm = (p[4] - '0') * 10 + (p[5] - '0');
  if (hh > 23 || mm > 59) return -1;
  int64_t off = (int64_t)hh * 3600 + mm * 60;
  *out = *p == '+' ? t - off : t + off;
  return 0;
}

/* tools/cmd_status.c - `chunklock status STORE`: chunks, bytes, dedup
 * factor, last GC; and cli_store_stats, which the demo's summary shares. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "datastore/chunk_format.h"
#include "tools/cli.h"

static const char usage_text[] =
    "usage: chunklock status STORE [--json]\n\n"
    "Reports snapshots, chunks and bytes on disk, the bytes the snapshots\n"
    "reference, the dedup factor (referenced bytes / unique chunk bytes), the\n"
    "compression factor, the last GC and whether the store is frozen. Reads\n"
    "every chunk header and index header: takes no lock, may run at any time.\n";

static bool is_hex64(const char *s) {
  for (int i = 0; i < 64; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
  return s[64] == '\0';
}

/* One prefix directory of .chunks. Chunks vanishing under a concurrent GC
 * are skipped. */
static void scan_prefix(int cfd, const char *prefix, cli_stats *s) {
  int dfd = openat(cfd, prefix, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0) return;
  DIR *d = fdopendir(dfd);
  if (!d) {
    close(dfd);
    return;
  }
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    if (strstr(e->d_name, ".bad")) {
      s->bad_chunks++;
      continue;
    }
    if (strlen(e->d_name) != 64 || !is_hex64(e->d_name)) continue;
    int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) continue;
    struct stat sb;
    uint8_t hdr[24];
    ckl__chunk_hdr h;
    const char *why;
    if (fstat(fd, &sb) == 0 && pread(fd, hdr, sizeof hdr, 0) == (ssize_t)sizeof hdr &&
        ckl__chunk_parse_header(hdr, (uint64_t)sb.st_size, &h, &why) == 0) {
      s->chunks++;
      s->stored_bytes += (uint64_t)sb.st_size;
      s->plain_bytes += h.plain_len;
    } else {
      s->unreadable_chunks++;
    }
    close(fd);
  }
  closedir(d);
}

static void scan_snapshots(ckl_store *st, cli_stats *s) {
  ckl_group_name *gs = NULL;
  size_t ng = 0;
  if (ckl_group_list(st, &gs, &ng) < 0) return;
  s->groups = ng;
  for (size_t i = 0; i < ng; i++) {
    ckl_snapshot_info *v = NULL;
    size_t n = 0;
    if (ckl_snapshot_list(st, &gs[i], &v, &n) < 0) continue;
    for (size_t k = 0; k < n; k++) {
      if (v[k].state != CKL_SNAP_COMPLETE) {
        s->in_progress++;
        continue;
      }
      s->snapshots++;
      char dir[4096];
      if (ckl_snapshot_path(st, &v[k].name, dir, sizeof dir) < 0) continue;
      for (size_t f = 0; f < v[k].nfiles; f++) {
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", dir, v[k].files[f]);
        ckl_index *ix;
        if (ckl_index_open(path, &ix) < 0) continue; /* forgotten meanwhile */
        s->archives++;
        s->logical_bytes += ckl_index_size(ix);
        ckl_index_close(ix);
      }
    }
    ckl_snapshot_list_free(v, n);
  }
  free(gs);
}

int cli_store_stats(ckl_store *st, cli_stats *s, cli_progress *p) {
  memset(s, 0, sizeof *s);
  char cpath[4200];
  snprintf(cpath, sizeof cpath, "%s/.chunks", ckl_store_path(st));
  int cfd = open(cpath, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cfd < 0) return -errno;
  for (unsigned i = 0; i < 65536; i++) {
    char prefix[8];
    snprintf(prefix, sizeof prefix, "%04x", i);
    scan_prefix(cfd, prefix, s);
    if (p && (i & 255) == 255) cli_progress_update(p, i + 1, prefix);
  }
  close(cfd);
  scan_snapshots(st, s);
  s->dedup_factor = s->plain_bytes ? (double)s->logical_bytes / (double)s->plain_bytes : 0;
  s->compression_factor =
      s->stored_bytes ? (double)s->plain_bytes / (double)s->stored_bytes : 0;
  return 0;
}

int cli_cmd_status(int argc, char **argv) {
  int json;
  int pec = cli_getopt_json_only(argc, argv, usage_text, &json);
  if (pec >= 0) return pec;
  if (argc - cli_optind != 1) return cli_usage_error("expected exactly one STORE");
  ckl_store *st;
  int ec = cli_open_store(argv[cli_optind], &st);
  if (ec) return ec;
  cli_progress p;
  cli_progress_start(&p, "status", 65536);
  cli_stats s;
  int rc = cli_store_stats(st, &s, &p);
  cli_progress_end(&p);
  if (rc < 0) {
    ec = cli_fail(rc, NULL, "cannot read %s/.chunks", ckl_store_path(st));
    ckl_store_close(st);
    return ec;
  }
  ckl_gc_result gr;
  int grc = ckl_gc_status_load(st, &gr);
  if (grc < 0 && grc != -ENOENT)
    cli_msg("warning: cannot read the last GC's status: %s", ckl_strerror(grc));
  ckl_freeze_info fi = {0};
  (void)ckl_freeze_probe(st, &fi);
  const ckl_store_config *cfg = ckl_store_get_config(st);
  const char *frozen = fi.frozen == CKL_FREEZE_EXCLUSIVE ? "exclusive"
                       : fi.frozen == CKL_FREEZE_SHARED  ? "shared"
                                                         : "no";
  if (json) {
    json_t *o = json_object();
    cli_json_set(o, "store", json_string(ckl_store_path(st)));
    cli_json_set(o, "uuid", json_string(cfg->uuid));
    cli_json_set(o, "chunk_average_size", json_integer(cfg->chunk_average_size));
    cli_json_set(o, "groups", json_integer((json_int_t)s.groups));
    cli_json_set(o, "snapshots", json_integer((json_int_t)s.snapshots));
    cli_json_set(o, "in_progress", json_integer((json_int_t)s.in_progress));
    cli_json_set(o, "archives", json_integer((json_int_t)s.archives));
    cli_json_set(o, "chunks", json_integer((json_int_t)s.chunks));
    cli_json_set(o, "bytes", json_integer((json_int_t)s.stored_bytes));
    cli_json_set(o, "plain_bytes", json_integer((json_int_t)s.plain_bytes));
    cli_json_set(o, "logical_bytes", json_integer((json_int_t)s.logical_bytes));
    cli_json_set(o, "dedup_factor", json_real(s.dedup_factor));
    cli_json_set(o, "compression_factor", json_real(s.compression_factor));
    cli_json_set(o, "bad_chunks", json_integer((json_int_t)s.bad_chunks));
    cli_json_set(o, "unreadable_chunks", json_integer((json_int_t)s.unreadable_chunks));
    cli_json_set(o, "frozen", json_string(frozen));
    if (grc == 0) {
      json_t *g = json_object();
      cli_json_set(g, "start", cli_json_time(gr.start_ns));
      cli_json_set(g, "end", cli_json_time(gr.end_ns));
      cli_json_set(g, "removed_chunks", json_integer((json_int_t)gr.removed_chunks));
      cli_json_set(g, "removed_bytes", json_integer((json_int_t)gr.removed_bytes));
      cli_json_set(g, "dry_run", json_boolean(gr.dry_run));
      cli_json_set(o, "last_gc", g);
    } else {
      cli_json_set(o, "last_gc", json_null());
    }
    cli_json_print(o);
  } else {
    char sb[32], pb[32], lb[32];
    cli_format_bytes(s.stored_bytes, sb, sizeof sb);
    cli_format_bytes(s.plain_bytes, pb, sizeof pb);
    cli_format_bytes(s.logical_bytes, lb, sizeof lb);
    printf("store        %s (uuid %s)\n", ckl_store_path(st), cfg->uuid);
    printf("snapshots    %" PRIu64 " in %" PRIu64 " groups (%" PRIu64 " in progress)\n",
           s.snapshots, s.groups, s.in_progress);
    printf("chunks       %" PRIu64 " (%s on disk, %s plain)\n", s.chunks, sb, pb);
    printf("referenced   %s in %" PRIu64 " archives\n", lb, s.archives);
    printf("dedup        %.2fx (compression %.2fx)\n", s.dedup_factor, s.compression_factor);
    if (s.bad_chunks || s.unreadable_chunks)
      printf("damage       %" PRIu64 " chunks set aside as bad, %" PRIu64 " unreadable\n",
             s.bad_chunks, s.unreadable_chunks);
    if (grc == 0) {
      char end[32], rb[32];
      cli_format_time(gr.end_ns, end, sizeof end);
      cli_format_bytes(gr.removed_bytes, rb, sizeof rb);
      printf("last gc      %s: removed %" PRIu64 " chunks (%s) in %.1f s\n", end,
             gr.removed_chunks, rb, (double)(gr.end_ns - gr.start_ns) / 1e9);
    } else {
      printf("last gc      never\n");
    }
    printf("frozen       %s\n", frozen);
  }
  ckl_store_close(st);
  return CLI_EXIT_OK;
}

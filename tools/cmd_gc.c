/* tools/cmd_gc.c - `chunklock gc STORE`. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>

#include "tools/cli.h"

static const char usage_text[] =
    "usage: chunklock gc STORE [--dry-run] [--exclusive] [--wait SECONDS]\n"
    "                          [--atime-cutoff SECONDS] [--json]\n\n"
    "Removes chunks that no snapshot references. Backups, readers, verify and\n"
    "forget keep running meanwhile (in this and other processes).\n"
    "  --dry-run               report what would be removed, remove nothing\n"
    "  --exclusive             strict mode: also exclude writers of other processes\n"
    "  --wait SECONDS          wait this long for the locks (default: do not wait;\n"
    "                          busy exits 3 naming the holder)\n"
    "  --atime-cutoff SECONDS  keep chunks touched within SECONDS before the GC\n"
    "                          started (default: the store's atime safety)\n"
    "A GC is refused while the store is frozen (chunklock with-lock).\n";

static json_t *result_json(const ckl_gc_result *r) {
  json_t *o = json_object();
  cli_json_set(o, "dry_run", json_boolean(r->dry_run));
  cli_json_set(o, "exclusive", json_boolean(r->exclusive));
  cli_json_set(o, "start", cli_json_time(r->start_ns));
  cli_json_set(o, "end", cli_json_time(r->end_ns));
  cli_json_set(o, "cutoff", cli_json_time(r->cutoff_ns));
  cli_json_set(o, "index_files", json_integer((json_int_t)r->index_files));
  cli_json_set(o, "referenced_chunks", json_integer((json_int_t)r->referenced_chunks));
  cli_json_set(o, "missing_chunks", json_integer((json_int_t)r->missing_chunks));
  cli_json_set(o, "logical_bytes", json_integer((json_int_t)r->logical_bytes));
  cli_json_set(o, "disk_chunks", json_integer((json_int_t)r->disk_chunks));
  cli_json_set(o, "disk_bytes", json_integer((json_int_t)r->disk_bytes));
  cli_json_set(o, "removed_chunks", json_integer((json_int_t)r->removed_chunks));
  cli_json_set(o, "removed_bytes", json_integer((json_int_t)r->removed_bytes));
  cli_json_set(o, "pending_chunks", json_integer((json_int_t)r->pending_chunks));
  cli_json_set(o, "pending_bytes", json_integer((json_int_t)r->pending_bytes));
  cli_json_set(o, "bad_chunks", json_integer((json_int_t)r->bad_chunks));
  cli_json_set(o, "trash_purged", json_integer((json_int_t)r->trash_purged));
  cli_json_set(o, "mark_ms", json_integer(r->mark_ns / 1000000));
  cli_json_set(o, "sweep_ms", json_integer(r->sweep_ns / 1000000));
  return o;
}

int cli_cmd_gc(int argc, char **argv) {
  enum { OPT_DRY = 1, OPT_EXCL, OPT_WAIT, OPT_CUTOFF, OPT_JSON };
  static const struct option lo[] = {{"dry-run", no_argument, NULL, OPT_DRY},
                                     {"exclusive", no_argument, NULL, OPT_EXCL},
                                     {"wait", required_argument, NULL, OPT_WAIT},
                                     {"atime-cutoff", required_argument, NULL, OPT_CUTOFF},
                                     {"json", no_argument, NULL, OPT_JSON},
                                     {"help", no_argument, NULL, 'h'},
                                     {0}};
  ckl_gc_opts o = {0};
  ckl_holder who = {0};
  o.busy_holder = &who;
  int json = 0, c;
  uint64_t v;
  while ((c = cli_getopt(argc, argv, "h", lo)) != -1) {
    switch (c) {
    case -2: return CLI_EXIT_USAGE;
    case 'h': fputs(usage_text, stdout); return CLI_EXIT_OK;
    case OPT_DRY: o.dry_run = 1; break;
    case OPT_EXCL: o.exclusive = 1; break;
    case OPT_JSON: json = 1; break;
    case OPT_WAIT:
      if (cli_parse_seconds_ms("--wait", cli_optarg, &o.wait_ms) < 0) return CLI_EXIT_USAGE;
      break;
    case OPT_CUTOFF:
      if (cli_parse_uint("--atime-cutoff", cli_optarg, 31536000, &v) < 0) return CLI_EXIT_USAGE;
      o.atime_safety_s = (int64_t)v;
      o.use_safety = 1;
      break;
    default: break;
    }
  }
  if (argc - cli_optind != 1) return cli_usage_error("expected exactly one STORE");
  ckl_store *st;
  int ec = cli_open_store(argv[cli_optind], &st);
  if (ec) return ec;
  cli_progress p;
  cli_progress_start(&p, o.dry_run ? "gc (dry run)" : "gc", 0);
  cli_progress_tick_start(&p);
  ckl_gc_result r;
  int rc = ckl_gc_run(st, &o, &r);
  cli_progress_end(&p);
  if (rc < 0) {
    ec = cli_fail(rc, &who, "gc of %s", ckl_store_path(st));
    ckl_store_close(st);
    return ec;
  }
  if (json) {
    cli_json_print(result_json(&r));
  } else {
    char rb[32], db[32], cut[32];
    cli_format_bytes(r.removed_bytes, rb, sizeof rb);
    cli_format_bytes(r.disk_bytes, db, sizeof db);
    cli_format_time(r.cutoff_ns, cut, sizeof cut);
    printf("%s: %" PRIu64 " index files, %" PRIu64 " chunks referenced, %" PRIu64
           " missing\n", r.dry_run ? "gc (dry run)" : "gc", r.index_files,
           r.referenced_chunks, r.missing_chunks);
    printf("%s %" PRIu64 " chunks (%s) of %" PRIu64 " (%s); %" PRIu64
           " unreferenced chunks newer than the cutoff %s kept\n",
           r.dry_run ? "would remove" : "removed", r.removed_chunks, rb, r.disk_chunks, db,
           r.pending_chunks, cut);
  }
  if (r.missing_chunks)
    cli_msg("warning: %" PRIu64 " referenced chunks are missing: run 'chunklock verify' to "
            "see which snapshots are damaged", r.missing_chunks);
  ckl_store_close(st);
  return CLI_EXIT_OK;
}

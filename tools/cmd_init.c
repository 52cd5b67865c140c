/* tools/cmd_init.c - `chunklock init STORE`. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "tools/cli.h"

static const char usage_text[] =
    "usage: chunklock init STORE [--chunk-size SIZE] [--compress-level N]\n"
    "                            [--sync filesystem|file|none] [--atime-safety SECONDS]\n"
    "                            [--gc-margin SECONDS] [--locks-dir DIR] [--json]\n\n"
    "Creates a store at STORE (a new or empty directory).\n"
    "  --chunk-size SIZE       average chunk size of backups, a power of two in\n"
    "                          [64K, 4M] (default 1M)\n"
    "  --compress-level N      zstd level 1..22, or -1 to never compress (default 3)\n"
    "  --sync POLICY           filesystem: syncfs once per backup (default);\n"
    "                          file: fsync every chunk; none: no fsync\n"
    "  --atime-safety SECONDS  GC keeps chunks touched this long before it started\n"
    "                          (default 87300: relatime updates atime once a day)\n"
    "  --gc-margin SECONDS     margin for coarse timestamps (default 5)\n"
    "  --locks-dir DIR         keep lock files under DIR/<store uuid> (absolute)\n";

int cli_cmd_init(int argc, char **argv) {
  enum { OPT_CHUNK = 1, OPT_LEVEL, OPT_SYNC, OPT_SAFETY, OPT_MARGIN, OPT_LOCKS, OPT_JSON };
  static const struct option lo[] = {
      {"chunk-size", required_argument, NULL, OPT_CHUNK},
      {"compress-level", required_argument, NULL, OPT_LEVEL},
      {"sync", required_argument, NULL, OPT_SYNC},
      {"atime-safety", required_argument, NULL, OPT_SAFETY},
      {"gc-margin", required_argument, NULL, OPT_MARGIN},
      {"locks-dir", required_argument, NULL, OPT_LOCKS},
      {"json", no_argument, NULL, OPT_JSON},
      {"help", no_argument, NULL, 'h'},
      {0}};
  ckl_store_create_opts co = {0};
  int json = 0, c;
  uint64_t v;
  while ((c = cli_getopt(argc, argv, "h", lo)) != -1) {
    switch (c) {
    case -2: return CLI_EXIT_USAGE;
    case 'h': fputs(usage_text, stdout); return CLI_EXIT_OK;
    case OPT_JSON: json = 1; break;
    case OPT_CHUNK:
      if (cli_parse_size("--chunk-size", cli_optarg, &v) < 0) return CLI_EXIT_USAGE;
      if (v < (64u << 10) || v > (4u << 20) || (v & (v - 1)))
        return cli_usage_error("--chunk-size must be a power of two in [64K, 4M]");
      co.chunk_average_size = (uint32_t)v;
      break;
    case OPT_LEVEL:
      if (!strcmp(cli_optarg, "-1")) {
        co.compress_level = -1;
      } else {
        if (cli_parse_uint("--compress-level", cli_optarg, 22, &v) < 0) return CLI_EXIT_USAGE;
        if (v == 0) return cli_usage_error("--compress-level is 1..22 or -1");
        co.compress_level = (int)v;
      }
      break;
    case OPT_SYNC:
      if (!strcmp(cli_optarg, "filesystem")) co.sync = CKL_SYNC_FILESYSTEM;
      else if (!strcmp(cli_optarg, "file")) co.sync = CKL_SYNC_FILE;
      else if (!strcmp(cli_optarg, "none")) co.sync = CKL_SYNC_NONE;
      else return cli_usage_error("--sync is filesystem, file or none");
      break;
    case OPT_SAFETY:
      if (cli_parse_uint("--atime-safety", cli_optarg, 31536000, &v) < 0) return CLI_EXIT_USAGE;
      co.gc_atime_safety_s = (int64_t)v;
      co.set |= CKL_STORE_SET_ATIME_SAFETY;
      break;
    case OPT_MARGIN:
      if (cli_parse_uint("--gc-margin", cli_optarg, 3600, &v) < 0) return CLI_EXIT_USAGE;
      co.gc_margin_s = (int64_t)v;
      co.set |= CKL_STORE_SET_MARGIN;
      break;
    case OPT_LOCKS:
      if (cli_optarg[0] != '/') return cli_usage_error("--locks-dir must be an absolute path");
      co.locks_dir = cli_optarg;
      break;
    default: break;
    }
  }
  if (argc - cli_optind != 1) return cli_usage_error("expected exactly one STORE");
  const char *path = argv[cli_optind];
  int rc = ckl_store_create(path, &co);
  if (rc == -EEXIST) return cli_fail(rc, NULL, "%s is already a store", path);
  if (rc == -ENOTEMPTY)
    return cli_fail(rc, NULL, "%s is a non-empty directory that is not a store", path);
  if (rc < 0) return cli_fail(rc, NULL, "cannot create a store at %s", path);
  ckl_store *st;
  int ec = cli_open_store(path, &st);
  if (ec) return ec;
  const ckl_store_config *cfg = ckl_store_get_config(st);
  if (json) {
    json_t *o = json_object();
    cli_json_set(o, "store", json_string(ckl_store_path(st)));
    cli_json_set(o, "uuid", json_string(cfg->uuid));
    cli_json_set(o, "chunk_average_size", json_integer(cfg->chunk_average_size));
    cli_json_set(o, "compress_level", json_integer(cfg->compress_level));
    cli_json_set(o, "sync", json_string(ckl_sync_policy_name(cfg->sync)));
    cli_json_set(o, "gc_atime_safety_s", json_integer(cfg->gc_atime_safety_s));
    cli_json_set(o, "gc_margin_s", json_integer(cfg->gc_margin_s));
    cli_json_print(o);
  } else {
    printf("created store %s (uuid %s, average chunk %u bytes)\n", ckl_store_path(st), cfg->uuid,
           cfg->chunk_average_size);
  }
  ckl_store_close(st);
  return CLI_EXIT_OK;
}

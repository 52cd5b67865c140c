/* tools/cmd_forget.c - `chunklock forget STORE SNAPSHOT` and
 * `chunklock prune STORE TYPE/ID --keep-last N ...`. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "tools/cli.h"

static const char forget_usage[] =
    "usage: chunklock forget STORE SNAPSHOT [--wait SECONDS] [--json]\n\n"
    "Removes one snapshot (TYPE/ID/TIME). Its chunks stay until a GC finds them\n"
    "unreferenced. Never waits for the snapshot: if a reader, verify or backup\n"
    "holds it, exits 3 naming the holder.\n"
    "  --wait SECONDS  wait this long while the store is frozen (with-lock)\n";

static const char prune_usage[] =
    "usage: chunklock prune STORE TYPE/ID [--keep-last N] [--keep-hourly N]\n"
    "                       [--keep-daily N] [--keep-weekly N] [--keep-monthly N]\n"
    "                       [--keep-yearly N] [--dry-run] [--wait SECONDS] [--json]\n\n"
    "Removes the snapshots of a group that no keep rule keeps (rules as in\n"
    "Proxmox Backup Server and restic; periods in UTC; the newest snapshot is\n"
    "always kept). Snapshots in use are skipped with a warning. At least one\n"
    "rule is required.\n"
    "  --dry-run       show what would be removed, remove nothing\n"
    "  --wait SECONDS  wait this long while the store is frozen (with-lock)\n";

/* A freeze (with-lock) makes forget and prune busy. The CLI takes the
 * deleter guard itself, before the snapshot and group locks, so that it
 * can wait for a freeze (--wait) and name it; the library's own guard
 * inside forget/prune then always succeeds (a holder of a deleter guard
 * gets another at once, freeze.h). */
static int wait_freeze(ckl_store *st, int64_t wait_ms, ckl_deleter *d, const char *op) {
  ckl_holder who = {0};
  ckl_freeze_opts fo = {.timeout_ms = wait_ms, .operation = op, .busy_holder = &who};
  int rc = ckl_deleter_acquire(st, d, &fo);
  if (rc < 0) return cli_fail(rc, &who, "the store %s is frozen", ckl_store_path(st));
  return CLI_EXIT_OK;
}

int cli_cmd_forget(int argc, char **argv) {
  enum { OPT_WAIT = 1, OPT_JSON };
  static const struct option lo[] = {{"wait", required_argument, NULL, OPT_WAIT},
                                     {"json", no_argument, NULL, OPT_JSON},
                                     {"help", no_argument, NULL, 'h'},
                                     {0}};
  int json = 0, c;
  int64_t wait_ms = CKL_TRY;
  while ((c = cli_getopt(argc, argv, "h", lo)) != -1) {
    if (c == -2) return CLI_EXIT_USAGE;
    if (c == 'h') {
      fputs(forget_usage, stdout);
      return CLI_EXIT_OK;
    }
    if (c == OPT_JSON) json = 1;
    if (c == OPT_WAIT && cli_parse_seconds_ms("--wait", cli_optarg, &wait_ms) < 0)
      return CLI_EXIT_USAGE;
  }
  if (argc - cli_optind != 2) return cli_usage_error("expected STORE SNAPSHOT");
  ckl_snapshot_name sn;
  if (cli_parse_snapshot(argv[cli_optind + 1], &sn) < 0) return CLI_EXIT_USAGE;
  ckl_store *st;
  int ec = cli_open_store(argv[cli_optind], &st);
  if (ec) return ec;
  ckl_deleter d = {0};
  ec = wait_freeze(st, wait_ms, &d, "forget");
  if (ec == CLI_EXIT_OK) {
    ckl_holder who = {0};
    ckl_forget_opts fo = {.busy_holder = &who};
    int rc = ckl_forget(st, &sn, &fo);
    if (rc == -ENOENT) {
      ec = cli_fail(rc, NULL, "no snapshot %s", argv[cli_optind + 1]);
    } else if (rc < 0) {
      ec = cli_fail(rc, &who, "cannot forget %s", argv[cli_optind + 1]);
    } else if (json) {
      json_t *o = json_object();
      cli_json_set(o, "snapshot", json_string(argv[cli_optind + 1]));
      cli_json_set(o, "result", json_string(rc == CKL_FORGET_TRASHED ? "trashed" : "deleted"));
      cli_json_print(o);
    } else {
      printf("forgot %s%s\n", argv[cli_optind + 1],
             rc == CKL_FORGET_TRASHED ? " (kept in .trash until the running GC ends)" : "");
    }
  }
  ckl_deleter_release(&d);
  ckl_store_close(st);
  return ec;
}

int cli_cmd_prune(int argc, char **argv) {
  enum { OPT_LAST = 1, OPT_HOURLY, OPT_DAILY, OPT_WEEKLY, OPT_MONTHLY, OPT_YEARLY, OPT_DRY, OPT_WAIT, OPT_JSON };
  static const struct option lo[] = {{"keep-last", required_argument, NULL, OPT_LAST},
                                     {"keep-hourly", required_argument, NULL, OPT_HOURLY},
                                     {"keep-daily", required_argument, NULL, OPT_DAILY},
                                     {"keep-weekly", required_argument, NULL, OPT_WEEKLY},
                                     {"keep-monthly", required_argument, NULL, OPT_MONTHLY},
                                     {"keep-yearly", required_argument, NULL, OPT_YEARLY},
                                     {"dry-run", no_argument, NULL, OPT_DRY},
                                     {"wait", required_argument, NULL, OPT_WAIT},
                                     {"json", no_argument, NULL, OPT_JSON},
                                     {"help", no_argument, NULL, 'h'},
                                     {0}};
  ckl_prune_opts po = {0};
  unsigned *rule[] = {NULL, &po.keep_last, &po.keep_hourly, &po.keep_daily, &po.keep_weekly,
                      &po.keep_monthly, &po.keep_yearly};
  int json = 0, c;
  int64_t wait_ms = CKL_TRY;
  uint64_t v;
  while ((c = cli_getopt(argc, argv, "h", lo)) != -1) {
    if (c == -2) return CLI_EXIT_USAGE;
    if (c == 'h') {
      fputs(prune_usage, stdout);
      return CLI_EXIT_OK;
    }
    if (c >= OPT_LAST && c <= OPT_YEARLY) {
      if (cli_parse_uint(lo[c - 1].name, cli_optarg, 1000000, &v) < 0) return CLI_EXIT_USAGE;
      *rule[c] = (unsigned)v;
    }
    if (c == OPT_DRY) po.dry_run = 1;
    if (c == OPT_JSON) json = 1;
    if (c == OPT_WAIT && cli_parse_seconds_ms("--wait", cli_optarg, &wait_ms) < 0)
      return CLI_EXIT_USAGE;
  }
  if (argc - cli_optind != 2) return cli_usage_error("expected STORE TYPE/ID");
  if (!po.keep_last && !po.keep_hourly && !po.keep_daily && !po.keep_weekly &&
      !po.keep_monthly && !po.keep_yearly)
    return cli_usage_error("give at least one --keep-* rule with N > 0");
  ckl_group_name g;
  if (cli_parse_group(argv[cli_optind + 1], &g) < 0) return CLI_EXIT_USAGE;
  ckl_store *st;
  int ec = cli_open_store(argv[cli_optind], &st);
  if (ec) return ec;
  ckl_deleter d = {0};
  ec = po.dry_run ? CLI_EXIT_OK : wait_freeze(st, wait_ms, &d, "prune");
  ckl_prune_item *items = NULL;
  size_t n = 0;
  int rc = 0;
  if (ec == CLI_EXIT_OK) {
    ckl_holder who = {0};
    po.busy_holder = &who;
    rc = ckl_prune(st, &g, &po, &items, &n);
    if (rc == -ENOENT) ec = cli_fail(rc, NULL, "no group %s", argv[cli_optind + 1]);
    else if (rc < 0) ec = cli_fail(rc, &who, "prune of %s", argv[cli_optind + 1]);
  }
  json_t *arr = json ? json_array() : NULL;
  size_t removed = 0, skipped = 0;
  for (size_t i = 0; i < n; i++) {
    char name[CKL_SNAP_NAME_MAX + 1];
    ckl_snapshot_name_format(&items[i].name, name, sizeof name);
    const char *what = items[i].keep ? "keep" : items[i].rc == CKL_EBUSY ? "busy"
                       : items[i].rc == 0 ? (po.dry_run ? "would-remove" : "removed")
                                          : "failed";
    if (!items[i].keep && items[i].rc == 0) removed++;
    if (items[i].rc == CKL_EBUSY) skipped++;
    if (arr) {
      json_t *o = json_object();
      cli_json_set(o, "snapshot", json_string(name));
      cli_json_set(o, "action", json_string(what));
      cli_json_set(o, "reason", json_string(ckl_prune_reason_name(items[i].reason)));
      if (items[i].rc < 0) cli_json_set(o, "error", json_string(ckl_err_name(items[i].rc)));
      json_array_append_new(arr, o);
    } else {
      printf("%-13s %-60s %s%s%s\n", what, name, ckl_prune_reason_name(items[i].reason),
             items[i].rc < 0 ? ": " : "", items[i].rc < 0 ? ckl_strerror(items[i].rc) : "");
    }
  }
  if (skipped) cli_msg("warning: %zu snapshot%s in use, skipped", skipped, skipped == 1 ? "" : "s");
  if (arr && (rc >= 0 || n)) {
    json_t *o = json_object();
    cli_json_set(o, "group", json_string(argv[cli_optind + 1]));
    cli_json_set(o, "dry_run", json_boolean(po.dry_run));
    cli_json_set(o, "removed", json_integer((json_int_t)removed));
    cli_json_set(o, "skipped", json_integer((json_int_t)skipped));
    cli_json_set(o, "snapshots", arr);
    cli_json_print(o);
  } else {
    json_decref(arr);
  }
  free(items);
  ckl_deleter_release(&d);
  ckl_store_close(st);
  return ec;
}

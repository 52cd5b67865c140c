/* tools/cmd_locks.c - `chunklock locks STORE [--reap]`: every holder. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/cli.h"

static const char usage_text[] =
    "usage: chunklock locks STORE [--reap] [--json]\n\n"
    "Lists every registered holder of a lock on the store (backups, readers,\n"
    "verify, forget, prune, GC, with-lock), in all processes and hosts: operation,\n"
    "pid, host, since, lease, mode and target; and whether the store is frozen.\n"
    "Records of processes that are gone are removed whenever the list is read.\n"
    "  --reap   also report how many stale records were removed first\n";

typedef struct listing {
  json_t *arr;
  int json;
  int n;
} listing;

static const char *mode_of(const ckl_roster_entry *e) {
  return e->flags & CKL_ROSTER_EXCLUSIVE ? "exclusive" : "shared";
}

static int on_entry(const ckl_roster_entry *e, void *arg) {
  listing *l = arg;
  l->n++;
  if (l->json) {
    json_t *o = json_object();
    cli_json_set(o, "token", json_string(e->token));
    cli_json_set(o, "parsed", json_boolean(e->parsed));
    if (!e->parsed) {
      cli_json_set(o, "note", json_string(e->note));
    } else {
      cli_json_set(o, "operation", json_string(e->operation));
      cli_json_set(o, "target", json_string(e->target));
      cli_json_set(o, "pid", json_integer(e->pid));
      cli_json_set(o, "tid", json_integer(e->tid));
      cli_json_set(o, "host", json_string(e->hostname));
      cli_json_set(o, "local", json_boolean(e->local));
      cli_json_set(o, "since", cli_json_time(e->start_ns));
      cli_json_set(o, "lease_expiry", cli_json_time(e->lease_expiry_ns));
      cli_json_set(o, "mode", json_string(mode_of(e)));
      cli_json_set(o, "writer", json_boolean((e->flags & CKL_ROSTER_WRITER) != 0));
    }
    json_array_append_new(l->arr, o);
    return 0;
  }
  if (l->n == 1)
    printf("%-16s %8s %-16s %-20s %-20s %-9s %s\n", "OPERATION", "PID", "HOST", "SINCE",
           "LEASE", "MODE", "TARGET");
  if (!e->parsed) {
    printf("%-16s %8s %-16s %-20s %-20s %-9s record %s cannot be read (%s): counts as held\n",
           "?", "?", "?", "?", "?", "?", e->token, e->note);
    return 0;
  }
  char since[32], lease[32];
  cli_format_time(e->start_ns, since, sizeof since);
  cli_format_time(e->lease_expiry_ns, lease, sizeof lease);
  printf("%-16s %8" PRId64 " %-16s %-20s %-20s %-9s %s\n", e->operation, e->pid, e->hostname,
         since, lease, mode_of(e), e->target);
  return 0;
}

static const char *frozen_name(int f) {
  return f == CKL_FREEZE_EXCLUSIVE ? "exclusive" : f == CKL_FREEZE_SHARED ? "shared" : "no";
}

int cli_cmd_locks(int argc, char **argv) {
  enum { OPT_REAP = 1, OPT_JSON };
  static const struct option lo[] = {{"reap", no_argument, NULL, OPT_REAP},
                                     {"json", no_argument, NULL, OPT_JSON},
                                     {"help", no_argument, NULL, 'h'},
                                     {0}};
  int json = 0, reap = 0, c;
  while ((c = cli_getopt(argc, argv, "h", lo)) != -1) {
    if (c == -2) return CLI_EXIT_USAGE;
    if (c == 'h') {
      fputs(usage_text, stdout);
      return CLI_EXIT_OK;
    }
    if (c == OPT_REAP) reap = 1;
    if (c == OPT_JSON) json = 1;
  }
  if (argc - cli_optind != 1) return cli_usage_error("expected exactly one STORE");
  ckl_store *st;
  int ec = cli_open_store(argv[cli_optind], &st);
  if (ec) return ec;
  const char *path = ckl_store_path(st);
  int reaped = 0;
  if (reap) {
    reaped = ckl_roster_reap(path, 0);
    if (reaped < 0) {
      ec = cli_fail(reaped, NULL, "cannot reap stale records of %s", path);
      ckl_store_close(st);
      return ec;
    }
  }
  listing l = {.json = json, .arr = json ? json_array() : NULL};
  int rc = ckl_roster_list(path, on_entry, &l);
  ckl_freeze_info fi = {0};
  int frc = rc >= 0 ? ckl_freeze_probe(st, &fi) : 0;
  ckl_roster_gc gs = {0};
  int grc = rc >= 0 && frc >= 0 ? ckl_roster_gc_state(path, &gs) : 0;
  if (rc < 0 || frc < 0 || grc < 0) {
    json_decref(l.arr);
    int bad = rc < 0 ? rc : frc < 0 ? frc : grc;
    ec = cli_fail(bad, NULL, "cannot read the holders of %s", path);
    ckl_store_close(st);
    return ec;
  }
  if (json) {
    json_t *o = json_object();
    cli_json_set(o, "store", json_string(path));
    cli_json_set(o, "holders", l.arr);
    if (reap) cli_json_set(o, "reaped", json_integer(reaped));
    json_t *f = json_object();
    cli_json_set(f, "frozen", json_string(frozen_name(fi.frozen)));
    cli_json_set(f, "deleting", json_boolean(fi.deleting));
    cli_json_set(o, "freeze", f);
    json_t *g = json_object();
    cli_json_set(g, "active", json_boolean(gs.active));
    cli_json_set(g, "phase1_start", gs.active ? cli_json_time(gs.phase1_start_ns) : json_null());
    cli_json_set(g, "removed_during_gc", json_integer((json_int_t)gs.removed));
    cli_json_set(o, "gc", g);
    cli_json_print(o);
  } else {
    if (reap) printf("reaped %d stale record%s\n", reaped, reaped == 1 ? "" : "s");
    if (l.n == 0) printf("no holders\n");
    printf("frozen: %s; deleters running: %s; gc marking: %s\n", frozen_name(fi.frozen),
           fi.deleting ? "yes" : "no", gs.active ? "yes" : "no");
  }
  ckl_store_close(st);
  return CLI_EXIT_OK;
}

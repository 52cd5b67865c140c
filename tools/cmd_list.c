/* tools/cmd_list.c - `chunklock list STORE [TYPE/ID]`. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/cli.h"

static const char usage_text[] =
    "usage: chunklock list STORE [TYPE/ID] [--json]\n\n"
    "Lists the snapshots of every group (or of one), newest first: name, state\n"
    "(complete, or in-progress: no manifest yet), archives and the verify state.\n";

/* The verify state recorded in the manifest, or NULL. */
static const char *verify_state(ckl_store *st, const ckl_snapshot_name *n, json_t **keep) {
  json_t *m = NULL;
  if (ckl_manifest_load(st, n, &m) < 0) return NULL;
  json_t *vs = json_object_get(json_object_get(m, "unprotected"), "verify_state");
  const char *s = json_string_value(json_object_get(vs, "state"));
  *keep = m; /* s points into m */
  return s;
}

static int list_group(ckl_store *st, const ckl_group_name *g, json_t *arr, int *count) {
  ckl_snapshot_info *v = NULL;
  size_t n = 0;
  int rc = ckl_snapshot_list(st, g, &v, &n);
  if (rc < 0) return rc;
  for (size_t i = 0; i < n; i++) {
    char name[CKL_SNAP_NAME_MAX + 1];
    ckl_snapshot_name_format(&v[i].name, name, sizeof name);
    const char *state = v[i].state == CKL_SNAP_COMPLETE ? "complete" : "in-progress";
    json_t *m = NULL;
    const char *vs = v[i].state == CKL_SNAP_COMPLETE ? verify_state(st, &v[i].name, &m) : NULL;
    (*count)++;
    if (arr) {
      json_t *o = json_object();
      cli_json_set(o, "snapshot", json_string(name));
      cli_json_set(o, "type", json_string(v[i].name.type));
      cli_json_set(o, "id", json_string(v[i].name.id));
      cli_json_set(o, "time", json_string(v[i].name.time));
      cli_json_set(o, "state", json_string(state));
      json_t *files = json_array();
      for (size_t k = 0; k < v[i].nfiles; k++) json_array_append_new(files, json_string(v[i].files[k]));
      cli_json_set(o, "archives", files);
      cli_json_set(o, "verify", vs ? json_string(vs) : json_null());
      json_array_append_new(arr, o);
    } else {
      printf("%-60s %-11s %6zu archive%s  verify: %s\n", name, state, v[i].nfiles,
             v[i].nfiles == 1 ? " " : "s", vs ? vs : "-");
    }
    json_decref(m);
  }
  ckl_snapshot_list_free(v, n);
  return 0;
}

int cli_cmd_list(int argc, char **argv) {
  int json;
  int pec = cli_getopt_json_only(argc, argv, usage_text, &json);
  if (pec >= 0) return pec;
  int nargs = argc - cli_optind;
  if (nargs < 1 || nargs > 2) return cli_usage_error("expected STORE [TYPE/ID]");
  ckl_group_name one;
  if (nargs == 2 && cli_parse_group(argv[cli_optind + 1], &one) < 0) return CLI_EXIT_USAGE;
  ckl_store *st;
  int ec = cli_open_store(argv[cli_optind], &st);
  if (ec) return ec;
  json_t *arr = json ? json_array() : NULL;
  int count = 0, rc;
  if (nargs == 2) {
    rc = list_group(st, &one, arr, &count);
    if (rc == -ENOENT) {
      json_decref(arr);
      ckl_store_close(st);
      return cli_fail(rc, NULL, "no group %s/%s", one.type, one.id);
    }
  } else {
    ckl_group_name *gs = NULL;
    size_t ng = 0;
    rc = ckl_group_list(st, &gs, &ng);
    for (size_t i = 0; rc == 0 && i < ng; i++) {
      rc = list_group(st, &gs[i], arr, &count);
      if (rc == -ENOENT) rc = 0; /* forgotten while we listed */
    }
    free(gs);
  }
  if (rc < 0) {
    json_decref(arr);
    ec = cli_fail(rc, NULL, "cannot list %s", ckl_store_path(st));
    ckl_store_close(st);
    return ec;
  }
  if (json) {
    json_t *o = json_object();
    cli_json_set(o, "store", json_string(ckl_store_path(st)));
    cli_json_set(o, "snapshots", arr);
    cli_json_print(o);
  } else if (count == 0) {
    printf("no snapshots\n");
  }
  ckl_store_close(st);
  return CLI_EXIT_OK;
}

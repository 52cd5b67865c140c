/* tools/cmd_verify.c - `chunklock verify STORE [SNAPSHOT]` and
 * `chunklock fsck STORE`. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "tools/cli.h"

static const char verify_usage[] =
    "usage: chunklock verify STORE [SNAPSHOT] [--json]\n\n"
    "Reads every chunk of one snapshot (or of every complete snapshot) and\n"
    "checks its digest; records the result in the snapshot's manifest. Runs\n"
    "beside backups, GC and forgets; a snapshot being verified cannot be\n"
    "forgotten. Exits 4 if damage was found, 3 if a snapshot was busy (being\n"
    "written or forgotten) and nothing was damaged.\n";

static const char fsck_usage[] =
    "usage: chunklock fsck STORE [--clean] [--json]\n\n"
    "Checks the whole store: every index and manifest parses and matches, every\n"
    "referenced chunk exists and is intact; reports leftovers (temp files, trash,\n"
    "half-written snapshots, chunks set aside as bad). Takes no exclusive lock.\n"
    "Exits 4 if it found anything.\n"
    "  --clean   remove leftovers that are provably garbage as they are found\n";

typedef struct vsum {
  json_t *arr;
  size_t ok, damaged, busy, failed;
} vsum;

static void verify_one(ckl_store *st, const ckl_snapshot_name *n, vsum *s, cli_progress *p) {
  char name[CKL_SNAP_NAME_MAX + 1];
  ckl_snapshot_name_format(n, name, sizeof name);
  cli_progress_update(p, s->ok + s->damaged + s->busy + s->failed, name);
  ckl_holder who = {0};
  ckl_verify_opts vo = {.busy_holder = &who};
  ckl_verify_result r = {0};
  int rc = ckl_verify(st, n, &vo, &r);
  const char *state = rc == 0 ? "ok" : rc == CKL_ECORRUPT ? "damaged"
                     : rc == CKL_EBUSY ? "busy" : "failed";
  if (rc == 0) s->ok++;
  else if (rc == CKL_ECORRUPT) s->damaged++;
  else if (rc == CKL_EBUSY) s->busy++;
  else s->failed++;
  if (s->arr) {
    json_t *o = json_object();
    cli_json_set(o, "snapshot", json_string(name));
    cli_json_set(o, "state", json_string(state));
    cli_json_set(o, "files", json_integer((json_int_t)r.files));
    cli_json_set(o, "chunks", json_integer((json_int_t)r.chunks));
    cli_json_set(o, "bad_chunks", json_integer((json_int_t)r.bad_chunks));
    cli_json_set(o, "bad_files", json_integer((json_int_t)r.bad_files));
    if (rc < 0 && rc != CKL_ECORRUPT) cli_json_set(o, "error", json_string(ckl_err_name(rc)));
    if (rc == CKL_EBUSY) cli_json_set(o, "holder", cli_json_holder(&who));
    json_array_append_new(s->arr, o);
    return;
  }
  if (rc == 0)
    printf("ok       %s (%zu archives, %zu chunks)\n", name, r.files, r.chunks);
  else if (rc == CKL_ECORRUPT)
    printf("DAMAGED  %s (%zu bad chunks, %zu bad archives)\n", name, r.bad_chunks, r.bad_files);
  else
    cli_fail(rc, &who, "cannot verify %s", name);
}

int cli_cmd_verify(int argc, char **argv) {
  int json;
  int pec = cli_getopt_json_only(argc, argv, verify_usage, &json);
  if (pec >= 0) return pec;
  int nargs = argc - cli_optind;
  if (nargs < 1 || nargs > 2) return cli_usage_error("expected STORE [SNAPSHOT]");
  ckl_snapshot_name one;
  if (nargs == 2 && cli_parse_snapshot(argv[cli_optind + 1], &one) < 0) return CLI_EXIT_USAGE;
  ckl_store *st;
  int ec = cli_open_store(argv[cli_optind], &st);
  if (ec) return ec;
  vsum s = {.arr = json ? json_array() : NULL};
  cli_progress p;
  if (nargs == 2) {
    cli_progress_start(&p, "verify", 0);
    cli_progress_tick_start(&p);
    verify_one(st, &one, &s, &p);
  } else {
    /* every complete snapshot, listed first so the bar knows the total */
    ckl_snapshot_name *all = NULL;
    size_t n = 0, cap = 0;
    ckl_group_name *gs = NULL;
    size_t ng = 0;
    int rc = ckl_group_list(st, &gs, &ng);
    for (size_t i = 0; rc == 0 && i < ng; i++) {
      ckl_snapshot_info *v = NULL;
      size_t k = 0;
      if (ckl_snapshot_list(st, &gs[i], &v, &k) < 0) continue;
      for (size_t j = 0; j < k; j++) {
        if (v[j].state != CKL_SNAP_COMPLETE) continue;
        if (n == cap) {
          cap = cap ? cap * 2 : 64;
          ckl_snapshot_name *nv = realloc(all, cap * sizeof *nv);
          if (!nv) {
            rc = -ENOMEM;
            break;
          }
          all = nv;
        }
        all[n++] = v[j].name;
      }
      ckl_snapshot_list_free(v, k);
    }
    free(gs);
    if (rc < 0) {
      free(all);
      json_decref(s.arr);
      ckl_store_close(st);
      return cli_fail(rc, NULL, "cannot list the snapshots");
    }
    cli_progress_start(&p, "verify", n ? n : 1);
    cli_progress_tick_start(&p);
    for (size_t i = 0; i < n; i++) verify_one(st, &all[i], &s, &p);
    free(all);
  }
  cli_progress_end(&p);
  if (json) {
    json_t *o = json_object();
    cli_json_set(o, "ok", json_integer((json_int_t)s.ok));
    cli_json_set(o, "damaged", json_integer((json_int_t)s.damaged));
    cli_json_set(o, "busy", json_integer((json_int_t)s.busy));
    cli_json_set(o, "failed", json_integer((json_int_t)s.failed));
    cli_json_set(o, "snapshots", s.arr);
    cli_json_print(o);
  }
  ckl_store_close(st);
  if (s.damaged) return CLI_EXIT_DAMAGE;
  if (s.failed) return CLI_EXIT_FAILED;
  if (s.busy) return CLI_EXIT_BUSY;
  return CLI_EXIT_OK;
}

typedef struct fsum {
  json_t *arr;
  cli_progress *p;
} fsum;

static void on_problem(const ckl_fsck_problem *pr, void *arg) {
  fsum *f = arg;
  if (f->arr) {
    json_t *o = json_object();
    cli_json_set(o, "kind", json_string(ckl_fsck_kind_name(pr->kind)));
    cli_json_set(o, "path", json_string(pr->path));
    cli_json_set(o, "detail", json_string(pr->detail));
    json_array_append_new(f->arr, o);
    return;
  }
  if (f->p->on) fprintf(stderr, "\r\033[K");
  printf("%-18s %s: %s\n", ckl_fsck_kind_name(pr->kind), pr->path, pr->detail);
}

int cli_cmd_fsck(int argc, char **argv) {
  enum { OPT_CLEAN = 1, OPT_JSON };
  static const struct option lo[] = {{"clean", no_argument, NULL, OPT_CLEAN},
                                     {"json", no_argument, NULL, OPT_JSON},
                                     {"help", no_argument, NULL, 'h'},
                                     {0}};
  int json = 0, c;
  ckl_fsck_opts fo = {0};
  while ((c = cli_getopt(argc, argv, "h", lo)) != -1) {
    if (c == -2) return CLI_EXIT_USAGE;
    if (c == 'h') {
      fputs(fsck_usage, stdout);
      return CLI_EXIT_OK;
    }
    if (c == OPT_JSON) json = 1;
    if (c == OPT_CLEAN) fo.flags |= CKL_FSCK_CLEAN;
  }
  if (argc - cli_optind != 1) return cli_usage_error("expected exactly one STORE");
  ckl_store *st;
  int ec = cli_open_store(argv[cli_optind], &st);
  if (ec) return ec;
  cli_progress p;
  cli_progress_start(&p, "fsck", 0);
  cli_progress_tick_start(&p);
  fsum f = {.arr = json ? json_array() : NULL, .p = &p};
  ckl_fsck_summary sum = {0};
  int rc = ckl_fsck(st, &fo, on_problem, &f, &sum);
  cli_progress_end(&p);
  if (rc < 0) {
    json_decref(f.arr);
    ec = cli_fail(rc, NULL, "fsck of %s stopped", ckl_store_path(st));
    ckl_store_close(st);
    return ec;
  }
  if (json) {
    json_t *o = json_object();
    cli_json_set(o, "store", json_string(ckl_store_path(st)));
    cli_json_set(o, "clean", json_boolean(sum.problems == 0));
    cli_json_set(o, "snapshots", json_integer((json_int_t)sum.snapshots));
    cli_json_set(o, "indexes", json_integer((json_int_t)sum.indexes));
    cli_json_set(o, "chunks", json_integer((json_int_t)sum.chunks));
    cli_json_set(o, "problems", f.arr);
    cli_json_set(o, "removed", json_integer((json_int_t)sum.cleaned));
    cli_json_print(o);
  } else {
    printf("fsck: %zu snapshots, %zu indexes, %zu chunks checked: %s", sum.snapshots,
           sum.indexes, sum.chunks, sum.problems ? "" : "clean\n");
    if (sum.problems) printf("%zu problems\n", sum.problems);
  }
  ckl_store_close(st);
  return sum.problems ? CLI_EXIT_DAMAGE : CLI_EXIT_OK;
}

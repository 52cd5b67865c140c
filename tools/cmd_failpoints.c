/* tools/cmd_failpoints.c - `chunklock failpoints [--json]`. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "tools/cli.h"

static const char usage_text[] =
    "usage: chunklock failpoints [--json]\n\n"
    "Lists every failpoint site. Arm them with\n"
    "  CHUNKLOCK_FAILPOINTS=\"name=action;...\" chunklock ...\n"
    "actions: sleep(MS) error(CODE) crash pause pausefile(DIR) count off,\n"
    "optionally prefixed N* to fire on the first N hits only.\n";

int cli_cmd_failpoints(int argc, char **argv) {
  static const struct option lo[] = {{"json", no_argument, NULL, 'j'},
                                     {"help", no_argument, NULL, 'h'}, {0}};
  int json = 0, c;
  while ((c = cli_getopt(argc, argv, "h", lo)) != -1) {
    if (c == -2) return CLI_EXIT_USAGE;
    if (c == 'j') json = 1;
    if (c == 'h') {
      fputs(usage_text, stdout);
      return CLI_EXIT_OK;
    }
  }
  if (cli_optind < argc) return cli_usage_error("unexpected argument '%s'", argv[cli_optind]);
  size_t n = ckl_failpoint_count();
  json_t *arr = json ? json_array() : NULL;
  for (size_t i = 0; i < n; i++) {
    const char *desc = NULL;
    const char *name = ckl_failpoint_catalog(i, &desc);
    if (json) {
      json_t *o = json_object();
      cli_json_set(o, "name", json_string(name));
      cli_json_set(o, "description", json_string(desc ? desc : ""));
      json_array_append_new(arr, o);
    } else {
      printf("%-36s %s\n", name, desc ? desc : "");
    }
  }
  if (json) cli_json_print(arr);
  return CLI_EXIT_OK;
}

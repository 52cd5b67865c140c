/* tools/cmd_failpoints.c - `chunklock failpoints [--json]`. */
#include <stdio.h>
#include <string.h>

#include "chunklock/chunklock.h"
#include "tools/cli.h"

int cli_cmd_failpoints(int argc, char **argv) {
  int json = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json")) json = 1;
    else if (!strcmp(argv[i], "--help")) {
      printf("usage: chunklock failpoints [--json]\n\n"
             "Lists every failpoint site. Arm them with\n"
             "  CHUNKLOCK_FAILPOINTS=\"name=action;...\" chunklock ...\n"
             "actions: sleep(MS) error(CODE) crash pause pausefile(DIR) count off,\n"
             "optionally prefixed N* to fire on the first N hits only.\n");
      return CLI_EXIT_OK;
    } else {
      fprintf(stderr, "chunklock failpoints: unknown option '%s'\n", argv[i]);
      return CLI_EXIT_USAGE;
    }
  }
  size_t n = ckl_failpoint_count();
  if (json) printf("[");
  for (size_t i = 0; i < n; i++) {
    const char *desc = NULL;
    const char *name = ckl_failpoint_catalog(i, &desc);
    if (json) printf("%s{\"name\":\"%s\",\"description\":\"%s\"}", i ? "," : "", name, desc);
    else printf("%-36s %s\n", name, desc);
  }
  if (json) printf("]\n");
  return CLI_EXIT_OK;
}

/*
 * tools/main.c - the `chunklock` command-line tool: dispatch.
 *
 * Exit codes (a contract for scripts): 0 ok; 1 operation failed; 2 usage
 * error; 3 busy (locked by another holder); 4 verify/fsck found damage.
 */
#include <stdio.h>
#include <string.h>

#include "chunklock/chunklock.h"
#include "tools/cli.h"

static const cli_command commands[] = {
    {"failpoints", "list every failpoint name with a one-line description", cli_cmd_failpoints},
};

static void usage(FILE *out) {
  fprintf(out, "usage: chunklock [--version] [--help] COMMAND [ARGS...]\n\ncommands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv) {
  const char *detail = NULL;
  int frc = ckl_failpoint_env_status(&detail);
  if (frc < 0) {
    fprintf(stderr, "chunklock: %s (%s)\n", detail, ckl_err_name(frc));
    return CLI_EXIT_USAGE;
  }
  if (argc < 2) {
    usage(stderr);
    return CLI_EXIT_USAGE;
  }
  if (!strcmp(argv[1], "--version")) {
    printf("chunklock %s\n", ckl_version());
    return CLI_EXIT_OK;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
    usage(stdout);
    return CLI_EXIT_OK;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
  fprintf(stderr, "chunklock: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return CLI_EXIT_USAGE;
}

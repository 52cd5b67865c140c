/*
 * tools/main.c - the `chunklock` command-line tool: dispatch.
 *
 * Exit codes (a contract for scripts): 0 ok; 1 operation failed; 2 usage
 * error; 3 busy (locked by another holder; the message names it); 4
 * verify/fsck found damage. docs/chunklock.1 is the manual.
 */
#include <stdio.h>
#include <string.h>

#include "tools/cli.h"

static const cli_command commands[] = {
    {"init", "create a store", cli_cmd_init},
    {"backup", "back up files and directories into a new snapshot", cli_cmd_backup},
    {"restore", "restore a snapshot into a directory", cli_cmd_restore},
    {"list", "list groups and snapshots", cli_cmd_list},
    {"forget", "remove one snapshot", cli_cmd_forget},
    {"prune", "remove the snapshots of a group that no keep rule keeps", cli_cmd_prune},
    {"gc", "remove chunks that no snapshot references", cli_cmd_gc},
    {"verify", "check that snapshots can be read back", cli_cmd_verify},
    {"fsck", "check the whole store", cli_cmd_fsck},
    {"status", "chunks, bytes, dedup factor, last GC", cli_cmd_status},
    {"locks", "every holder of a lock on the store", cli_cmd_locks},
    {"with-lock", "run a command under a store-wide lock", cli_cmd_with_lock},
    {"demo", "concurrent backups, prunes and GCs on a temporary store", cli_cmd_demo},
    {"failpoints", "list every failpoint name with a one-line description", cli_cmd_failpoints},
};

static void usage(FILE *out) {
  fprintf(out, "usage: chunklock [--version] [--help] COMMAND [ARGS...]\n\ncommands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
  fprintf(out, "\n'chunklock COMMAND --help' describes a command. Exit codes: 0 ok, 1 failed,\n"
               "2 usage error, 3 busy (the holder is named), 4 damage found.\n");
}

int main(int argc, char **argv) {
  const char *detail = NULL;
  int frc = ckl_failpoint_env_status(&detail);
  if (frc < 0) {
    fprintf(stderr, "chunklock: CHUNKLOCK_FAILPOINTS: %s (%s)\n", detail, ckl_err_name(frc));
    return CLI_EXIT_USAGE;
  }
  if (argc < 2) {
    usage(stderr);
    return CLI_EXIT_USAGE;
  }
  if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
    printf("chunklock %s\n", ckl_version());
    return CLI_EXIT_OK;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    usage(stdout);
    return CLI_EXIT_OK;
  }
  if (!strcmp(argv[1], "help")) {
    if (argc < 3) {
      usage(stdout);
      return CLI_EXIT_OK;
    }
    char *hv[] = {argv[2], "--help", NULL};
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
      if (!strcmp(argv[2], commands[i].name)) {
        cli_set_command(commands[i].name);
        return commands[i].fn(2, hv);
      }
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
    if (strcmp(argv[1], commands[i].name) != 0) continue;
    cli_set_command(commands[i].name);
    cli_log_init();
    int ec = commands[i].fn(argc - 1, argv + 1);
    cli_flush_held("chunklock: error: ");
    return ec;
  }
  fprintf(stderr, "chunklock: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return CLI_EXIT_USAGE;
}

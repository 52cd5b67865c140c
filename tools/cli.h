/* tools/cli.h - shared declarations of the chunklock CLI. */
#ifndef CKL_TOOLS_CLI_H
#define CKL_TOOLS_CLI_H

enum {
  CLI_EXIT_OK = 0,
  CLI_EXIT_FAILED = 1,
  CLI_EXIT_USAGE = 2,
  CLI_EXIT_BUSY = 3,
  CLI_EXIT_DAMAGE = 4
};

typedef struct cli_command {
  const char *name;
  const char *summary;
  int (*fn)(int argc, char **argv); /* argv[0] is the command name */
} cli_command;

int cli_cmd_failpoints(int argc, char **argv);

#endif

/* tools/cmd_with_lock.c - `chunklock with-lock STORE --shared|--exclusive
 * [--wait SECONDS] -- COMMAND...`: run a command under a store-wide lock
 * (freeze.h); with --soft, under a soft reader/writer lease lock on any
 * path (softlock.h), for shared filesystems. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tools/cli.h"

extern char **environ;

static const char usage_text[] =
    "usage: chunklock with-lock STORE --shared|--exclusive [--wait SECONDS] -- COMMAND...\n"
    "       chunklock with-lock --soft PATH --shared|--exclusive [--wait SECONDS] -- COMMAND...\n\n"
    "Runs COMMAND while holding a store-wide lock, and exits with its status\n"
    "(128+N if it was killed by signal N; 127 if it could not be started; 3 if\n"
    "the lock is busy: the message names the holder).\n"
    "  --shared      a freeze: nothing is deleted from the store while COMMAND\n"
    "                runs (GC, forget and prune wait or fail busy); backups may\n"
    "                still add, readers and verify run; many holders at once.\n"
    "                For copying the store (rsync, snapshots of the filesystem).\n"
    "  --exclusive   nothing but readers: no backup, forget, prune, GC or other\n"
    "                with-lock runs while COMMAND runs. For maintenance.\n"
    "  --wait SECONDS  wait this long for the lock (default: do not wait)\n"
    "  --soft PATH   instead of a store lock, take the soft reader/writer lease\n"
    "                lock PATH (marker files beside PATH; works on NFS and other\n"
    "                shared filesystems; any directory, not only a store). Its\n"
    "                heartbeat runs while COMMAND runs; if the lease is lost,\n"
    "                COMMAND gets SIGTERM and with-lock exits 1.\n"
    "COMMAND sees CHUNKLOCK_WITH_LOCK=shared|exclusive in its environment.\n";

static volatile sig_atomic_t child_pid;

static void forward(int sig) {
  pid_t p = (pid_t)child_pid;
  if (p > 0) kill(p, sig);
}

/* Run cmd with the termination signals forwarded, wait for it, and map its
 * status to ours (its exit code, 128+N for signal N, 127/126 if it could
 * not be started). The caller holds the lock for the whole call: the lock
 * must outlive COMMAND, never the other way round. */
static int run_command(char **cmd, const char *mode_name) {
  struct sigaction sa = {0}, old[4];
  static const int sigs[4] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
  sa.sa_handler = forward;
  sigemptyset(&sa.sa_mask);
  for (int i = 0; i < 4; i++) sigaction(sigs[i], &sa, &old[i]);

  setenv("CHUNKLOCK_WITH_LOCK", mode_name, 1);
  fflush(NULL);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t dfl;
  sigemptyset(&dfl);
  for (int i = 0; i < 4; i++) sigaddset(&dfl, sigs[i]);
  posix_spawnattr_setsigdefault(&attr, &dfl);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
  pid_t pid;
  int serr = posix_spawnp(&pid, cmd[0], NULL, &attr, cmd, environ);
  posix_spawnattr_destroy(&attr);
  int status = 0;
  if (serr == 0) {
    child_pid = pid;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    child_pid = 0;
  }
  for (int i = 0; i < 4; i++) sigaction(sigs[i], &old[i], NULL);
  if (serr != 0) {
    cli_msg("cannot run '%s': %s", cmd[0], strerror(serr));
    return serr == ENOENT ? 127 : 126;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return CLI_EXIT_FAILED;
}

/* --soft: the lease is kept by the soft lock's heartbeat thread. When it is
 * lost (evicted by another host, or not refreshed in time), the command is
 * no longer protected: stop it. Called on the heartbeat thread; kill() is
 * all it does. */
static volatile sig_atomic_t soft_lost;
static void on_soft_lost(void *ctx, ckl_softlock_lost reason) {
  (void)ctx;
  (void)reason;
  soft_lost = 1;
  pid_t p = (pid_t)child_pid;
  if (p > 0) kill(p, SIGTERM);
}

static int with_soft_lock(const char *path, int exclusive, int64_t wait_ms, char **cmd) {
  ckl_softlock lk = {0};
  ckl_holder who = {0};
  ckl_softlock_opts so = {.timeout_ms = wait_ms, .operation = "with-lock",
                          .on_lost = on_soft_lost, .busy_holder = &who};
  int rc = ckl_softlock_acquire(&lk, path, exclusive ? CKL_LOCK_EXCLUSIVE : CKL_LOCK_SHARED, &so);
  if (rc < 0)
    return cli_fail(rc, &who, "cannot take the soft lock %s %s", path,
                    exclusive ? "exclusively" : "shared");
  int ec = run_command(cmd, exclusive ? "exclusive" : "shared");
  rc = ckl_softlock_release(&lk);
  if (soft_lost || rc == CKL_ELOCKLOST) {
    cli_msg("the soft lock %s was lost while the command ran: it was stopped", path);
    return CLI_EXIT_FAILED;
  }
  return ec;
}

int cli_cmd_with_lock(int argc, char **argv) {
  int dash = -1;
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--")) {
      dash = i;
      break;
    }
  int nopt = dash < 0 ? argc : dash;
  enum { OPT_SHARED = 1, OPT_EXCL, OPT_WAIT, OPT_SOFT };
  static const struct option lo[] = {{"shared", no_argument, NULL, OPT_SHARED},
                                     {"soft", no_argument, NULL, OPT_SOFT},
                                     {"exclusive", no_argument, NULL, OPT_EXCL},
                                     {"wait", required_argument, NULL, OPT_WAIT},
                                     {"help", no_argument, NULL, 'h'},
                                     {0}};
  int mode = 0, soft = 0, c;
  int64_t wait_ms = CKL_TRY;
  char *saved = dash >= 0 ? argv[dash] : NULL;
  if (dash >= 0) argv[dash] = NULL; /* getopt sees only what precedes "--" */
  while ((c = cli_getopt(nopt, argv, "h", lo)) != -1) {
    switch (c) {
    case -2: return CLI_EXIT_USAGE;
    case 'h': fputs(usage_text, stdout); return CLI_EXIT_OK;
    case OPT_SHARED:
    case OPT_EXCL:
      if (mode && mode != c) return cli_usage_error("--shared and --exclusive exclude each other");
      mode = c;
      break;
    case OPT_SOFT: soft = 1; break;
    case OPT_WAIT:
      if (cli_parse_seconds_ms("--wait", cli_optarg, &wait_ms) < 0) return CLI_EXIT_USAGE;
      break;
    default: break;
    }
  }
  if (dash >= 0) argv[dash] = saved;
  if (nopt - cli_optind != 1)
    return cli_usage_error(soft ? "expected exactly one PATH before '--'"
                                : "expected exactly one STORE before '--'");
  if (!mode) return cli_usage_error("give --shared or --exclusive");
  if (dash < 0 || dash + 1 >= argc) return cli_usage_error("expected '-- COMMAND...'");
  const char *store_path = argv[cli_optind];
  char **cmd = argv + dash + 1;
  if (soft) return with_soft_lock(store_path, mode == OPT_EXCL, wait_ms, cmd);

  ckl_store *st;
  int ec = cli_open_store(store_path, &st);
  if (ec) return ec;
  ckl_freeze f = {0};
  ckl_holder who = {0};
  ckl_freeze_opts fo = {.timeout_ms = wait_ms, .operation = "with-lock", .busy_holder = &who};
  ckl_freeze_mode fm = mode == OPT_EXCL ? CKL_FREEZE_EXCLUSIVE : CKL_FREEZE_SHARED;
  int rc = ckl_freeze_acquire(st, fm, &f, &fo);
  if (rc < 0) {
    ec = cli_fail(rc, &who, "cannot lock %s %s", ckl_store_path(st),
                  fm == CKL_FREEZE_EXCLUSIVE ? "exclusively" : "shared (freeze)");
    ckl_store_close(st);
    return ec;
  }

  ec = run_command(cmd, fm == CKL_FREEZE_EXCLUSIVE ? "exclusive" : "shared");
  ckl_freeze_release(&f);
  ckl_store_close(st);
  return ec;
}

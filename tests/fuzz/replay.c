/*
 * tests/fuzz/replay.c - main() for the corpus-replay build of a target:
 * feeds every file named on the command line (directories: every regular
 * file in them, not recursive) to LLVMFuzzerTestOneInput, each in a
 * buffer of exactly its size. No fuzzing: a quick regression run of the
 * seed corpus that works with any compiler. Every seed not named edge-*
 * or regress-* must be accepted by the parser (see fuzz.h), unless
 * CKL_FUZZ_REPLAY_ANY=1 (to replay a grown corpus, e.g. for a coverage
 * report, whose files are named by their hash). Exit 0 when
 * every input ran, 1 on a usage or I/O error or a rejected valid seed; a
 * failed check aborts.
 */
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static bool any_ok; /* CKL_FUZZ_REPLAY_ANY=1 */

static int run_file(const char *path, size_t *count) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "%s: %s\n", path, strerror(errno));
    return -1;
  }
  size_t cap = 4096, len = 0;
  uint8_t *buf = malloc(cap);
  FUZZ_CHECK(buf != NULL);
  size_t n;
  while ((n = fread(buf + len, 1, cap - len, f)) > 0) {
    len += n;
    if (len == cap) {
      cap *= 2;
      buf = realloc(buf, cap);
      FUZZ_CHECK(buf != NULL);
    }
  }
  int err = ferror(f);
  fclose(f);
  if (err) {
    fprintf(stderr, "%s: read error\n", path);
    free(buf);
    return -1;
  }
  uint8_t *exact = fuzz_dup(buf, len);
  free(buf);
  fuzz_accepted = 0;
  LLVMFuzzerTestOneInput(exact, len);
  free(exact);
  (*count)++;
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  if (!fuzz_accepted && !any_ok && strncmp(base, "edge-", 5) != 0 && strncmp(base, "regress-", 8) != 0) {
    fprintf(stderr, "%s: rejected, but only edge-* and regress-* seeds may be\n", path);
    return -1;
  }
  return 0;
}

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_path(const char *path, size_t *count) {
  struct stat st;
  if (stat(path, &st) != 0) {
    fprintf(stderr, "%s: %s\n", path, strerror(errno));
    return -1;
  }
  if (!S_ISDIR(st.st_mode)) return run_file(path, count);
  DIR *d = opendir(path);
  if (!d) {
    fprintf(stderr, "%s: %s\n", path, strerror(errno));
    return -1;
  }
  char **names = NULL;
  size_t n = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 64;
      names = realloc(names, cap * sizeof *names);
      FUZZ_CHECK(names != NULL);
    }
    names[n] = strdup(e->d_name);
    FUZZ_CHECK(names[n] != NULL);
    n++;
  }
  closedir(d);
  /* Sorted, so a failure names the same first input on every machine. */
  if (n) qsort(names, n, sizeof *names, by_name);
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    char full[4096];
    snprintf(full, sizeof full, "%s/%s", path, names[i]);
    struct stat fs;
    if (rc == 0 && stat(full, &fs) == 0 && S_ISREG(fs.st_mode)) rc = run_file(full, count);
    free(names[i]);
  }
  free(names);
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
    return 1;
  }
  const char *any = getenv("CKL_FUZZ_REPLAY_ANY");
  any_ok = any && strcmp(any, "1") == 0;
  LLVMFuzzerInitialize(&argc, &argv);
  size_t count = 0;
  for (int i = 1; i < argc; i++)
    if (run_path(argv[i], &count) < 0) return 1;
  if (count == 0) {
    fprintf(stderr, "%s: no input files: an empty corpus proves nothing\n", argv[0]);
    return 1;
  }
  printf("%s: %zu inputs replayed, no failure\n", argv[0], count);
  return 0;
}

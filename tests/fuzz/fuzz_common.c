/*
 * tests/fuzz/fuzz_common.c - initialisation and helpers of every target.
 *
 * Logging is switched on at debug level with a callback that discards the
 * text: the library formats a message only when someone listens, and the
 * error paths (e.g. the JSON position finder behind every schema error)
 * are parsers of untrusted input too, so they must run under the fuzzer.
 */
#include <string.h>

#include "chunklock/log.h"
#include "fuzz.h"

int fuzz_accepted;

static size_t log_bytes; /* keeps the strlen below from being optimised away */

static void discard(ckl_log_level level, const char *msg, void *userdata) {
  (void)level;
  (void)userdata;
  log_bytes += strlen(msg); /* a message must be a valid C string */
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  ckl_log_set(discard, NULL, CKL_LOG_DEBUG);
  return 0;
}

uint8_t *fuzz_dup(const uint8_t *data, size_t size) {
  uint8_t *p = malloc(size ? size : 1);
  FUZZ_CHECK(p != NULL);
  if (size) memcpy(p, data, size);
  return p;
}

void fuzz_put_le32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

uint32_t fuzz_get_le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

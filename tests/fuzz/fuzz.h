/*
 * tests/fuzz/fuzz.h - shared by the fuzz targets (docs/fuzzing.md).
 *
 * Every target is one LLVMFuzzerTestOneInput. It is linked two ways: with
 * libFuzzer (-fsanitize=fuzzer; CKL_BUILD_FUZZ, clang only) to fuzz, and
 * with replay.c, a plain main() that feeds it every file of its seed
 * corpus, so `ctest -L fuzz` replays the corpora in every build (gcc too).
 *
 * A target does more than "not crash": it checks what a successful parse
 * promises (round trips, bounds, exact error codes) with FUZZ_CHECK, which
 * aborts even in builds with NDEBUG, so a wrong answer is a finding like
 * a crash.
 */
#ifndef CKL_TESTS_FUZZ_H
#define CKL_TESTS_FUZZ_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond)                                                                   \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond);        \
      abort();                                                                             \
    }                                                                                      \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Set to 1 by a target when the input as given (not a fixed-up copy) was
 * accepted by its parser. replay.c requires it for every seed whose name
 * does not start with "edge-" or "regress-": the seeds the library's own
 * encoders wrote must keep parsing. */
extern int fuzz_accepted;

/* A malloc'd copy of data[0..size) of exactly that size (at least 1 byte
 * allocated), so ASan sees any read past the end of the input. */
uint8_t *fuzz_dup(const uint8_t *data, size_t size);

/* Little-endian helpers for the checksum fix-ups. */
void fuzz_put_le32(uint8_t *p, uint32_t v);
uint32_t fuzz_get_le32(const uint8_t *p);

#endif

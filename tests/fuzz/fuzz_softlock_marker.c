/*
 * tests/fuzz/fuzz_softlock_marker.c - ckl__softlock_marker_parse on
 * arbitrary marker files. Markers are read from lock directories that
 * other hosts (and anyone who can write there) share, so the parser is
 * the trust boundary of the soft lock.
 *
 * What an accepted marker must satisfy: it is at most
 * CKL__SOFTLOCK_MARKER_MAX bytes and canonical - ckl__softlock_marker_format
 * of the parsed fields gives back the input byte for byte (one spelling
 * per marker, so identity checks that compare fields cannot be fooled by a
 * second spelling). A rejected marker is CKL_ECORRUPT with *out untouched.
 */
#include <string.h>

#include "chunklock/error.h"
#include "fuzz.h"
#include "locks/softlock_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t *buf = fuzz_dup(data, size);
  ckl__softlock_marker m, before;
  memset(&m, 0x5a, sizeof m);
  before = m;
  int rc = ckl__softlock_marker_parse(buf, size, &m);
  if (rc < 0) {
    FUZZ_CHECK(rc == CKL_ECORRUPT);
    FUZZ_CHECK(memcmp(&m, &before, sizeof m) == 0);
    free(buf);
    return 0;
  }
  FUZZ_CHECK(size <= CKL__SOFTLOCK_MARKER_MAX);
  char out[CKL__SOFTLOCK_MARKER_MAX + 1];
  int n = ckl__softlock_marker_format(&m, out, sizeof out);
  FUZZ_CHECK(n >= 0 && (size_t)n == size && memcmp(out, buf, size) == 0);
  free(buf);
  fuzz_accepted = 1;
  return 0;
}

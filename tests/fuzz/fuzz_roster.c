/*
 * tests/fuzz/fuzz_roster.c - ckl__roster_decode on arbitrary roster
 * records (the values of STORE/.state's roster database, which any
 * process of any host sharing the store may have written).
 *
 * What a successful decode must satisfy: the record is at most
 * CKL__ROSTER_REC_MAX bytes, every string lies inside the buffer, and the
 * format is canonical: ckl__roster_encode of the view gives back the input
 * byte for byte. A failure must be CKL_ECORRUPT or CKL_EVERSION with a
 * reason.
 */
#include <string.h>

#include "chunklock/error.h"
#include "datastore/state.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t *rec = fuzz_dup(data, size);
  ckl__roster_view v;
  const char *why = NULL;
  int rc = ckl__roster_decode(rec, size, &v, &why);
  if (rc < 0) {
    FUZZ_CHECK(rc == CKL_ECORRUPT || rc == CKL_EVERSION);
    FUZZ_CHECK(why != NULL && why[0] != '\0');
    free(rec);
    return 0;
  }
  FUZZ_CHECK(size <= CKL__ROSTER_REC_MAX);
  for (int i = 0; i < 5; i++) {
    const uint8_t *s = (const uint8_t *)v.str[i];
    FUZZ_CHECK(s >= rec && s + v.len[i] <= rec + size);
  }
  uint8_t *out = malloc(CKL__ROSTER_REC_MAX);
  FUZZ_CHECK(out != NULL);
  int n = ckl__roster_encode(&v, out, CKL__ROSTER_REC_MAX);
  FUZZ_CHECK(n >= 0 && (size_t)n == size && memcmp(out, rec, size) == 0);
  free(out);
  free(rec);
  fuzz_accepted = 1;
  return 0;
}

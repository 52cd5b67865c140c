/*
 * tests/fuzz/fuzz_manifest.c - the manifest parser (index.json) on
 * arbitrary text, through ckl__manifest_parse: the code of
 * ckl_manifest_load after the file is read, without a store.
 *
 * What a successful parse must satisfy:
 *   - ckl_manifest_validate accepts the document, with no snapshot and
 *     with the snapshot it names;
 *   - the document serialised the way the library writes it (sorted keys,
 *     indented and compact) parses again, validates, and is json_equal to
 *     the first: what load accepts, write_new and update_manifest can
 *     write and read back.
 * A failure must be CKL_ECORRUPT or CKL_EVERSION with *out NULL. Error
 * messages are formatted (logging is on), which runs the JSON position
 * finder of json_util.c on the input.
 */
#include <string.h>

#include "chunklock/error.h"
#include "chunklock/manifest.h"
#include "datastore/manifest_internal.h"
#include "fuzz.h"

static void reparse(const json_t *m, const ckl_snapshot_name *snap, size_t flags) {
  char *s = json_dumps(m, flags | JSON_SORT_KEYS);
  FUZZ_CHECK(s != NULL);
  json_t *again = NULL;
  FUZZ_CHECK(ckl__manifest_parse("fuzz-roundtrip", s, strlen(s), snap, &again) == 0);
  FUZZ_CHECK(json_equal(m, again));
  json_decref(again);
  free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  json_t *m = (json_t *)1;
  int rc = ckl__manifest_parse("fuzz", (const char *)data, size, NULL, &m);
  if (rc < 0) {
    FUZZ_CHECK(rc == CKL_ECORRUPT || rc == CKL_EVERSION);
    FUZZ_CHECK(m == NULL);
    return 0;
  }
  FUZZ_CHECK(ckl_manifest_validate(m, NULL) == 0);
  json_t *name = json_object_get(m, "snapshot");
  ckl_snapshot_name snap;
  FUZZ_CHECK(ckl_snapshot_name_parsen(json_string_value(name), json_string_length(name), &snap) ==
             0);
  FUZZ_CHECK(ckl_manifest_validate(m, &snap) == 0);
  reparse(m, &snap, JSON_INDENT(2));
  reparse(m, &snap, JSON_COMPACT);
  json_decref(m);
  fuzz_accepted = 1;
  return 0;
}

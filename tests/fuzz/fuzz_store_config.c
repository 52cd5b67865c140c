/*
 * tests/fuzz/fuzz_store_config.c - the store configuration parser
 * (STORE/chunklock.json) on arbitrary text, through
 * ckl__store_config_parse: the code of ckl_store_open after the file is
 * read, without a store.
 *
 * What a successful parse must satisfy: every field is in the range
 * ckl_store_create would accept, and the configuration written back by
 * ckl__store_config_dump (what create writes) parses to the same values.
 * A failure must be CKL_ECORRUPT or CKL_EVERSION and leave no locks_dir
 * allocated.
 */
#include <string.h>

#include "chunklock/error.h"
#include "datastore/store_internal.h"
#include "fuzz.h"

static void check_ranges(const ckl_store_config *c) {
  FUZZ_CHECK(c->format == CKL_STORE_FORMAT);
  FUZZ_CHECK(strlen(c->uuid) == CKL_TOKEN_HEX_LEN && strlen(c->created) == CKL_SNAP_TIME_LEN);
  FUZZ_CHECK(c->chunk_average_size >= 65536 && c->chunk_average_size <= 4194304 &&
             (c->chunk_average_size & (c->chunk_average_size - 1)) == 0);
  FUZZ_CHECK(c->compress_level >= -1 && c->compress_level <= 22);
  FUZZ_CHECK(ckl_sync_policy_name(c->sync) != NULL);
  FUZZ_CHECK(c->gc_atime_safety_s >= 0 && c->gc_atime_safety_s <= 31536000);
  FUZZ_CHECK(c->gc_margin_s >= 0 && c->gc_margin_s <= 3600);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ckl_store_config cfg;
  char *locks_dir = (char *)1;
  int rc = ckl__store_config_parse("fuzz", (const char *)data, size, &cfg, &locks_dir);
  if (rc < 0) {
    FUZZ_CHECK(rc == CKL_ECORRUPT || rc == CKL_EVERSION);
    FUZZ_CHECK(locks_dir == NULL);
    return 0;
  }
  check_ranges(&cfg);
  if (locks_dir) FUZZ_CHECK(locks_dir[0] == '/' && strlen(locks_dir) >= 2);
  cfg.locks_dir = locks_dir;
  char *text = ckl__store_config_dump(&cfg);
  FUZZ_CHECK(text != NULL);
  ckl_store_config again;
  char *again_dir = NULL;
  FUZZ_CHECK(ckl__store_config_parse("fuzz-roundtrip", text, strlen(text), &again, &again_dir) ==
             0);
  FUZZ_CHECK(again.format == cfg.format && strcmp(again.uuid, cfg.uuid) == 0 &&
             strcmp(again.created, cfg.created) == 0 &&
             again.chunk_average_size == cfg.chunk_average_size &&
             again.compress_level == cfg.compress_level && again.sync == cfg.sync &&
             again.gc_atime_safety_s == cfg.gc_atime_safety_s &&
             again.gc_margin_s == cfg.gc_margin_s);
  FUZZ_CHECK((again_dir == NULL) == (locks_dir == NULL));
  if (locks_dir) FUZZ_CHECK(strcmp(again_dir, locks_dir) == 0);
  free(again_dir);
  free(text);
  free(locks_dir);
  fuzz_accepted = 1;
  return 0;
}

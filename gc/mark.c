/* gc/mark.c - touch the chunks of one index (see gc/mark.h). */
#include "gc/mark.h"

#include <string.h>

#include "chunklock/index.h"
#include "common/internal.h"

/* How often (in references) the mark loop polls the cancel flag. */
#define CANCEL_POLL 4096

int ckl__mark_index(ckl_chunkstore *cs, const char *index_path, ckl__digest_set *touched,
                    ckl__mark_stats *st, atomic_bool *cancel) {
  ckl_index *ix = NULL;
  int rc = ckl_index_open(index_path, &ix);
  if (rc < 0) {
    if (rc != -ENOENT)
      ckl__log_error("gc mark: cannot read index %s: %s", index_path, ckl_strerror(rc));
    return rc;
  }
  size_t n = ckl_index_count(ix);
  st->logical_bytes += ckl_index_size(ix);
  for (size_t i = 0; i < n; i++) {
    if (cancel && (i % CANCEL_POLL) == 0 && atomic_load(cancel)) {
      rc = CKL_ECANCELED;
      break;
    }
    const ckl_digest *d = ckl_index_digest(ix, i);
    st->references++;
    rc = ckl__digest_set_insert(touched, d);
    if (rc < 0) break;
    if (rc == 0) {
      st->cache_hits++;
      continue;
    }
    rc = ckl_chunk_touch(cs, d);
    if (rc == -ENOENT) {
      char hex[CKL_DIGEST_HEX_LEN + 1];
      ckl_digest_to_hex(d, hex);
      ckl__log_warn("gc mark: chunk %s referenced by %s is missing", hex, index_path);
      st->missing_chunks++;
      rc = 0;
      continue;
    }
    if (rc < 0) {
      char hex[CKL_DIGEST_HEX_LEN + 1];
      ckl_digest_to_hex(d, hex);
      ckl__log_error("gc mark: cannot touch chunk %s (referenced by %s): %s", hex, index_path,
                     ckl_strerror(rc));
      break;
    }
    st->touched++;
  }
  ckl_index_close(ix);
  if (rc >= 0) {
    st->index_files++;
    rc = 0;
  }
  return rc;
}

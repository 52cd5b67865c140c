/*
 * tests/support/gc_fixture.h - build stores with known snapshots, chunks and
 * ages for GC tests, without depending on the backup session code: chunks
 * go in with ckl_chunk_insert, indexes with ckl_index_writer, and a forget
 * is the state transaction plus the rename into .trash that forget does.
 */
#ifndef CKL_TEST_GC_FIXTURE_H
#define CKL_TEST_GC_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>

#include "chunklock/chunklock.h"

typedef struct gcfx {
  char *dir;    /* the store path */
  ckl_store *st;
} gcfx;

/* Create and open a store (safety 0, margin 1 s) in a fresh temp dir. */
void gcfx_open(gcfx *f);
void gcfx_close(gcfx *f);
/* cmocka per-test hooks: a fresh gcfx in *state (logging as
 * ckl_test_log_env), and its removal. */
int gcfx_setup(void **state);
int gcfx_teardown(void **state);
/* Deterministic chunk content for id; digest into *d. */
void gcfx_chunk(uint32_t id, ckl_digest *d);
/* Insert chunk `id`. */
void gcfx_insert(gcfx *f, uint32_t id);
/* Write snapshot `name` ("host/a/2026-01-01T00:00:00Z") with one dynamic
 * index "data.didx" referencing the chunks ids[0..n) (inserted first),
 * and a minimal index.json. */
void gcfx_snapshot(gcfx *f, const char *name, const uint32_t *ids, size_t n);
/* Set every chunk file's atime to now - age_s. */
void gcfx_age_chunks(gcfx *f, int64_t age_s);
/* Does chunk `id` exist at its final name? */
bool gcfx_has(gcfx *f, uint32_t id);
/* Forget as the datastore does: state forget transaction + rename into
 * .trash; delete at once unless a GC that sweeps is marking. Returns the
 * transaction's verdict: CKL__FORGET_NO_GC (0), _KEEP (1), _DRY_GC (2). */
int gcfx_forget(gcfx *f, const char *name);
/* Is gc_active set in the coordination state? */
int gcfx_gc_active(gcfx *f);
/* Count ".gc-*" files left in .chunks. */
int gcfx_count_gc_leftovers(gcfx *f);

#endif

/*
 * datastore/manifest_internal.h - the manifest parser without a store, for
 * ckl_manifest_load and the fuzz target (tests/fuzz). Not installed.
 */
#ifndef CKL_DATASTORE_MANIFEST_INTERNAL_H
#define CKL_DATASTORE_MANIFEST_INTERNAL_H

#include <jansson.h>
#include <stddef.h>

#include "chunklock/snapshot.h"

/* Parse raw[0..len) (need not be NUL-terminated) as a manifest and check
 * it as ckl_manifest_load does, against `snap` (NULL: any snapshot name).
 * `display` names the text in messages. *out is a new reference on
 * success, NULL otherwise. 0, CKL_ECORRUPT (logged with line and column),
 * CKL_EVERSION. */
int ckl__manifest_parse(const char *display, const char *raw, size_t len,
                        const ckl_snapshot_name *snap, json_t **out);

#endif

/* gc/gc_internal.h - pieces of the GC shared between its files. */
#ifndef CKL_GC_INTERNAL_H
#define CKL_GC_INTERNAL_H

#include "chunklock/gc.h"

/* Write STORE/.gc-status for a finished run (atomic replace). 0 or -errno. */
int ckl__gc_status_write(ckl_store *st, const ckl_gc_result *r);

/* Check that utimensat(UTIME_NOW) moves atime on the chunk filesystem,
 * using a probe file STORE/.chunks/.atime-probe. 0, CKL_EATIME, -errno. */
int ckl__gc_atime_check(int chunks_dirfd, const char *chunks_path);

#endif

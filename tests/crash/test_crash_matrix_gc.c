/* Crash matrix (tests/crash/crash_matrix.h): the GC's rows (locks, state,
 * mark, removed set, sweep, purge, status; strict mode; the abort path). */
// ctest-timeout: 300
#define CRASH_MATRIX_OPS OP_GC, OP_GC_STRICT, OP_GC_FAIL
#include "crash_matrix.h"

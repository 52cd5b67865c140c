/* Crash matrix (tests/crash/crash_matrix.h): the rows of the manifest
 * update (verify), forget (with and without a GC marking) and prune. */
// ctest-timeout: 300
#define CRASH_MATRIX_OPS OP_VERIFY, OP_FORGET, OP_FORGET_GC, OP_PRUNE, OP_FREEZE
#include "crash_matrix.h"

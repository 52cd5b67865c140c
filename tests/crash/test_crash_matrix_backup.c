/* Crash matrix (tests/crash/crash_matrix.h): the backup's rows (begin,
 * chunk insert, index write, finish, abort) and the catalog completeness
 * check. CKL_CRASH_SOAK_ITERS=N runs the random soak instead. */
// ctest-timeout: 300
#define CRASH_MATRIX_OPS OP_BACKUP, OP_BACKUP_ABORT
#include "crash_matrix.h"

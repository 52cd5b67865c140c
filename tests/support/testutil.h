/*
 * tests/support/testutil.h - helpers for the cmocka suites.
 *
 * Include order in a test: the system headers cmocka needs, then this file
 * (it includes cmocka.h itself).
 */
#ifndef CKL_TESTUTIL_H
#define CKL_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <cmocka.h>

#include "chunklock/chunklock.h"

/* A fresh empty directory under $CKL_TEST_TMPDIR (or /tmp), unique per call.
 * Returns a malloc'd path; the test removes it with ckl_test_rmtree. */
char *ckl_test_mkdtemp(const char *tag);
/* rm -rf path (no symlink following). 0 or -errno. */
int ckl_test_rmtree(const char *path);
/* Join into a static-per-call malloc'd string (caller frees). */
char *ckl_test_path(const char *dir, const char *name);
/* Write a whole file (creating, truncating); asserts success. */
void ckl_test_write_file(const char *path, const void *data, size_t len);
/* Read a whole file into a malloc'd NUL-terminated buffer; NULL + errno on failure. */
char *ckl_test_read_file(const char *path, size_t *len);
/* Count directory entries whose names start with prefix (all when NULL). */
int ckl_test_count_entries(const char *dir, const char *prefix);

/* Log capture: install a callback (debug level) that appends "[level] msg"
 * lines to a buffer, thread-safe; clear it; search it. Tests that check
 * that an error names its file and cause use these. */
void ckl_test_log_capture(void);
/* A log callback that prints to stderr only when CKL_TEST_LOG is set. */
void ckl_test_log_env(ckl_log_level level, const char *msg, void *ud);
void ckl_test_log_clear(void);
int ckl_test_logged(const char *needle);
/* The captured text (valid until the next log message or clear). */
const char *ckl_test_log_text(void);
/* Fail the test (printing the log) unless needle was logged. */
void ckl_test_assert_logged(const char *needle);

/* Fork a child that runs fn(arg) and _exits with its return value.
 * Returns the pid. */
pid_t ckl_test_fork(int (*fn)(void *), void *arg);
/* Wait for pid; returns its exit status, or 128+signal. */
int ckl_test_wait(pid_t pid);

/* Shared-memory region visible to forked children (MAP_SHARED|ANON). */
void *ckl_test_shared_alloc(size_t len);
void ckl_test_shared_free(void *p, size_t len);

#endif

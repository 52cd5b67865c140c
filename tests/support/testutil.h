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

/* The bound of every rendezvous wait in the tests (ckl_failpoint_wait_hits,
 * a pausefile's hit file, a thread or child reaching a step): a guard
 * against a hang, never a measurement. It only has to be shorter than the
 * ctest timeouts; anything tighter turns a slow machine (TSan is 5-15x
 * slower, and CI runs two test binaries and another job on two cores)
 * into a spurious failure, so every wait uses this one value. */
#define CKL_TEST_WAIT_MS 60000

/* The deadline of a lock wait that must succeed but whose length depends
 * on how long the other contenders take (stress tests: N threads x rounds
 * on one lock, a polling waiter beside blocked ones). It exists to run the
 * deadline (polling) path of the wait; a correct run never reaches it. A
 * finite guess such as 60 s is reached by a waiter that keeps losing to
 * the others while a slow sanitizer build runs the whole stress phase
 * for longer than that. */
#define CKL_TEST_NEVER_MS (24LL * 3600 * 1000)

/* A fresh empty directory under $CKL_TEST_TMPDIR (or /tmp), unique per call.
 * Returns a malloc'd path; the test removes it with ckl_test_rmtree. */
char *ckl_test_mkdtemp(const char *tag);
/* rm -rf path (no symlink following). 0 or -errno. */
int ckl_test_rmtree(const char *path);
/* Join into a static-per-call malloc'd string (caller frees). */
char *ckl_test_path(const char *dir, const char *name);
/* mkdir -p of root/rel (root must exist; the last directory may too). */
void ckl_test_mkdirs(const char *root, const char *rel);
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

/* Wait (bounded by CKL_TEST_WAIT_MS) until a file whose name starts with
 * `prefix` exists in dir; fails the test otherwise. For pausefile
 * failpoints: ckl_test_wait_pausefile(dir, name) waits for the hit file
 * DIR/NAME.hit.<pid> of any process; ckl_test_release_pausefile creates
 * DIR/NAME.go. A pausefile failpoint's .go file stays until removed, and
 * releases every later hit too: use a fresh directory per rendezvous. */
void ckl_test_wait_file(const char *dir, const char *prefix);
void ckl_test_wait_pausefile(const char *dir, const char *name);
void ckl_test_release_pausefile(const char *dir, const char *name);

/* Fork a child that runs fn(arg) and _exits with its return value.
 * Returns the pid. */
pid_t ckl_test_fork(int (*fn)(void *), void *arg);
/* In a forked child that blocks until its parent writes to a pipe: die
 * when the parent process dies. The child keeps its own copy of the
 * pipe's write end, so a parent that fails an assertion before writing
 * would leave it blocked for ever, holding the test's stdout open (ctest
 * then waits for the pipe and reports a timeout instead of the failure).
 * Only for children forked by a thread that lives as long as the process
 * (the test's main thread): the signal follows the forking thread. */
void ckl_test_die_with_parent(void);
/* Wait for pid; returns its exit status, or 128+signal. */
int ckl_test_wait(pid_t pid);

/* Shared-memory region visible to forked children (MAP_SHARED|ANON). */
void *ckl_test_shared_alloc(size_t len);
void ckl_test_shared_free(void *p, size_t len);

#endif

/*
 * tests/race/matrix.h - the ordered-pair race matrix over docs/locking.md.
 *
 * For every ordered pair (A, B) of operations and every protocol step s
 * of A (a failpoint where A holds some of its locks): park A at s, run B
 * to completion in try mode (or with a 100 ms deadline where the
 * operation waits: the manifest lock), release A, and compare both
 * results with the table in matrix_expect.c, which cites the locking.md
 * cell of each expectation. Then ckl_inv_check must pass, quiescent, and
 * the loser must have left nothing behind.
 *
 * Two variants, one table:
 *   threads  A runs on a thread of this process (failpoint `pause`,
 *            ckl_failpoint_wait_hits, ckl_failpoint_release);
 *   procs    A runs in a forked child (failpoint `pausefile(DIR)`), B in
 *            the parent.
 * They differ only where locking.md says the process locker is
 * per-process (proclock.h: an exclusive guard coexists with the shared
 * guards of its own process): cells 5, 11.
 *
 * The fixture, rebuilt before each run on one store per binary (resetting
 * it costs far less than creating 65,536 prefix directories):
 *   host/a/T0      S1: complete, 3 chunks; the target of RI, UM, FG, VF,
 *                  RD, the base of every BK, and what PR removes
 *   host/a/T0+60   S2: complete, shares 2 chunks with S1; kept by PR
 *   2 garbage chunks with atime an hour ago, so a GC sweeps something
 * BK writes host/a/T0+120 (as A) or T0+180 (as B); PR is keep-last 1 on
 * host/a.
 */
#ifndef CKL_RACE_MATRIX_H
#define CKL_RACE_MATRIX_H

#include <stddef.h>
#include <stdint.h>

#include "chunklock/chunklock.h"

/* Operations (docs/locking.md "The operations"; GX is `gc --exclusive`).
 * As B, GM and GS are the same thing (a whole GC run): B uses MX_GC. */
typedef enum mx_op {
  MX_RI,
  MX_BK,
  MX_GM,
  MX_GS,
  MX_GX,
  MX_UM,
  MX_FG,
  MX_PR,
  MX_VF,
  MX_RD,
  MX_WS,
  MX_WX,
  MX_NOPS,
  MX_GC = MX_GM /* as B: a whole GC, default mode */
} mx_op;

typedef enum mx_variant { MX_THREADS = 1, MX_PROCS = 2 } mx_variant;

#define MX_MAX_STEPS 8
/* aux of a result: not applicable / not compared / not listed */
#define MX_AUX_NONE 0x7fff0000
#define MX_ANY 0x7fff0001
#define MX_ABSENT 0x7fff0002

/* What an operation returned. For PR, aux is the removal result of S1
 * (ckl_prune_item.rc), or MX_ABSENT if the prune did not list S1. */
typedef struct mx_result {
  int rc;
  int aux;
  ckl_holder who; /* filled by the operation on CKL_EBUSY / CKL_ETIMEDOUT */
} mx_result;

typedef struct mx_op_info {
  const char *code;                 /* "BK" */
  const char *steps[MX_MAX_STEPS];  /* A's protocol failpoints, in order */
} mx_op_info;

extern const mx_op_info mx_ops[MX_NOPS];
/* The B operations, in the order a row runs them. */
extern const mx_op mx_b_ops[];
extern const size_t mx_nb_ops;

/* One expectation: the first rule matching (a, b, step of A, variant)
 * wins; no rule means "no interaction": both return 0. */
typedef struct mx_expect {
  int b_rc;
  const char *b_holder; /* operation B's busy/timeout must name; NULL: none */
  int b_aux;
  int a_rc;
  int a_aux;
  int cell;             /* locking.md cell, 0 for `–` */
} mx_expect;

mx_expect mx_expect_for(mx_op a, mx_op b, size_t step, mx_variant v);

/* Run the row of A: every B at every step of A, in variant v. Returns the
 * number of mismatches (each printed with its cell); *runs receives the
 * number of (B, step) runs done. */
int mx_run_row(mx_op a, mx_variant v, int *runs);

/* cmocka group hooks: one store per binary. */
int mx_group_setup(void **state);
int mx_group_teardown(void **state);

#endif

/*
 * tests/race/matrix_expect.c - what docs/locking.md says each ordered pair
 * returns, per step of A. One rule per line: the first rule that matches
 * (A, B, A's step in [from, to], variant) wins; a pair with no rule does
 * not interact and both return 0 (the `–` cells, and the cells whose
 * mechanism lets both run: 1, 4, 5, 9, 10, 14, 17, 18, 22, 27-29).
 *
 * Columns: A, B, from step, to step (NULL = A's first / last step),
 * variants, B's rc, the operation B's CKL_EBUSY / CKL_ETIMEDOUT must name,
 * B's aux (PR: the removal result of S1), A's rc, A's aux, locking.md cell.
 * The fixture is described in matrix.h: FG, VF, RD, UM and RI work on S1,
 * BK uses S1 as its base, PR (keep-last 1) removes S1.
 */
#include <string.h>

#include "chunklock/chunklock.h"
#include "matrix.h"

typedef struct rule {
  mx_op a, b;
  const char *from, *to;
  unsigned variants;
  mx_expect e;
} rule;

#define BOTH (MX_THREADS | MX_PROCS)
#define T MX_THREADS
#define P MX_PROCS
#define EBUSY_ CKL_EBUSY
#define ETIME_ CKL_ETIMEDOUT
#define TRASHED CKL_FORGET_TRASHED
#define ANY MX_ANY
#define ABSENT MX_ABSENT
/* R(A, B, from, to, variants, b_rc, b_holder, b_aux, a_rc, a_aux, cell) */
#define R(a, b, f, t, v, brc, bh, baux, arc, aaux, cell)                                         \
  {MX_##a, MX_##b, f, t, v, {brc, bh, baux, arc, aaux, cell}}

static const rule rules[] = {
    /* ---- A = RI: index open, fd held, not read yet ---- */
    R(RI, FG, NULL, NULL, BOTH, 0, NULL, ANY, 0, ANY, 2),   /* the open fd follows the move */
    R(RI, PR, NULL, NULL, BOTH, 0, NULL, 0, 0, ANY, 2),

    /* ---- A = BK: process locker S, group X, base S1 S, new snapshot X ---- */
    R(BK, BK, NULL, NULL, BOTH, EBUSY_, "backup", ANY, 0, ANY, 3),
    R(BK, GX, NULL, NULL, T, 0, NULL, ANY, 0, ANY, 5),      /* own process: guards coexist */
    /* the writer record is made before the first lock, so the process
     * locker's shared holder is named at every step */
    R(BK, GX, NULL, NULL, P, EBUSY_, "backup", ANY, 0, ANY, 5),
    R(BK, FG, NULL, NULL, BOTH, EBUSY_, "backup-base", ANY, 0, ANY, 7),
    R(BK, PR, NULL, NULL, BOTH, EBUSY_, "backup", ANY, 0, ANY, 8),
    R(BK, WX, NULL, NULL, T, 0, NULL, ANY, 0, ANY, 11),
    R(BK, WX, NULL, NULL, P, EBUSY_, "backup", ANY, 0, ANY, 11),

    /* ---- A = GM: GC lock; deleter guard from after_guard; gc_active from
     * after_state ---- */
    R(GM, GC, NULL, NULL, BOTH, EBUSY_, "gc", ANY, 0, ANY, 12),
    R(GM, GX, NULL, NULL, BOTH, EBUSY_, "gc", ANY, 0, ANY, 12),
    R(GM, WX, NULL, NULL, BOTH, EBUSY_, "gc", ANY, 0, ANY, 16),
    R(GM, WS, "gc.begin.after_guard", NULL, BOTH, EBUSY_, "gc", ANY, 0, ANY, 15),
    R(GM, FG, "gc.begin.after_state", NULL, BOTH, TRASHED, NULL, ANY, 0, ANY, 13),
    R(GM, PR, NULL, NULL, BOTH, 0, NULL, 0, 0, ANY, 13),

    /* ---- A = GS: GC lock and deleter guard, gc_active clear ---- */
    R(GS, GC, NULL, NULL, BOTH, EBUSY_, "gc", ANY, 0, ANY, 12),
    R(GS, GX, NULL, NULL, BOTH, EBUSY_, "gc", ANY, 0, ANY, 12),
    R(GS, WX, NULL, NULL, BOTH, EBUSY_, "gc", ANY, 0, ANY, 16),
    R(GS, WS, NULL, NULL, BOTH, EBUSY_, "gc", ANY, 0, ANY, 15),
    R(GS, PR, NULL, NULL, BOTH, 0, NULL, 0, 0, ANY, 17),

    /* ---- A = GX: GC lock, process locker X from proclock.after_exclusive ---- */
    R(GX, GC, NULL, NULL, BOTH, EBUSY_, "gc", ANY, 0, ANY, 12),
    R(GX, GX, NULL, NULL, BOTH, EBUSY_, "gc", ANY, 0, ANY, 12),
    R(GX, WX, NULL, NULL, BOTH, EBUSY_, "gc", ANY, 0, ANY, 16),
    R(GX, WS, "gc.begin.after_guard", NULL, BOTH, EBUSY_, "gc", ANY, 0, ANY, 15),
    R(GX, BK, "proclock.after_exclusive", NULL, P, EBUSY_, "gc", ANY, 0, ANY, 5),
    R(GX, FG, "gc.begin.after_state", "gc.mark.after_list", BOTH, TRASHED, NULL, ANY, 0, ANY, 13),
    R(GX, PR, NULL, NULL, BOTH, 0, NULL, 0, 0, ANY, 13),

    /* ---- A = UM: manifest lock of S1 ---- */
    R(UM, UM, NULL, NULL, BOTH, ETIME_, "update_manifest", ANY, 0, ANY, 19),
    R(UM, FG, NULL, NULL, BOTH, ETIME_, "update_manifest", ANY, 0, ANY, 20),
    R(UM, PR, NULL, NULL, BOTH, ETIME_, NULL, ETIME_, 0, ANY, 20),
    R(UM, VF, NULL, NULL, BOTH, ETIME_, "update_manifest", ANY, 0, ANY, 21),

    /* ---- A = FG: deleter guard; S1 X and its manifest lock from after_lock;
     * S1 moved (and deleted) from after_move ---- */
    R(FG, FG, "forget.after_guard", "forget.after_guard", BOTH, 0, NULL, ANY, -ENOENT, ANY, 23),
    R(FG, PR, "forget.after_guard", "forget.after_guard", BOTH, 0, NULL, 0, -ENOENT, ANY, 23),
    R(FG, WS, NULL, NULL, BOTH, EBUSY_, "forget", ANY, 0, ANY, 25),
    R(FG, WX, NULL, NULL, BOTH, EBUSY_, "forget", ANY, 0, ANY, 25),
    R(FG, FG, "forget.after_lock", "forget.after_lock", BOTH, EBUSY_, "forget", ANY, 0, ANY, 23),
    R(FG, PR, "forget.after_lock", "forget.after_lock", BOTH, 0, NULL, EBUSY_, 0, ANY, 23),
    R(FG, BK, "forget.after_lock", "forget.after_lock", BOTH, EBUSY_, "forget", ANY, 0, ANY, 7),
    R(FG, VF, "forget.after_lock", "forget.after_lock", BOTH, EBUSY_, "forget", ANY, 0, ANY, 24),
    R(FG, RD, "forget.after_lock", "forget.after_lock", BOTH, EBUSY_, "forget", ANY, 0, ANY, 24),
    R(FG, UM, "forget.after_lock", "forget.after_lock", BOTH, ETIME_, "forget", ANY, 0, ANY, 20),
    R(FG, PR, "forget.after_move", NULL, BOTH, 0, NULL, ABSENT, 0, ANY, 23),
    R(FG, FG, "forget.after_move", NULL, BOTH, -ENOENT, NULL, ANY, 0, ANY, 23),
    R(FG, BK, "forget.after_move", NULL, BOTH, -ENOENT, NULL, ANY, 0, ANY, 7),
    R(FG, VF, "forget.after_move", NULL, BOTH, -ENOENT, NULL, ANY, 0, ANY, 24),
    R(FG, RD, "forget.after_move", NULL, BOTH, -ENOENT, NULL, ANY, 0, ANY, 24),
    R(FG, UM, "forget.after_move", NULL, BOTH, -ENOENT, NULL, ANY, 0, ANY, 20),
    R(FG, RI, "forget.after_move", NULL, BOTH, -ENOENT, NULL, ANY, 0, ANY, 2),

    /* ---- A = PR: deleter guard; group X from after_list; S1 X from
     * before_remove; S1 moved, its manifest lock held, at forget.after_move ---- */
    R(PR, WS, NULL, NULL, BOTH, EBUSY_, "prune", ANY, 0, ANY, 25),
    R(PR, WX, NULL, NULL, BOTH, EBUSY_, "prune", ANY, 0, ANY, 25),
    R(PR, PR, "prune.after_guard", "prune.after_guard", BOTH, 0, NULL, 0, 0, ABSENT, 26),
    R(PR, PR, NULL, NULL, BOTH, EBUSY_, "prune", ANY, 0, 0, 26),
    R(PR, BK, "prune.after_guard", "prune.after_guard", BOTH, 0, NULL, ANY, 0, 0, 8),
    R(PR, BK, NULL, NULL, BOTH, EBUSY_, "prune", ANY, 0, 0, 8),
    R(PR, FG, "prune.after_guard", "prune.after_guard", BOTH, 0, NULL, ANY, 0, ABSENT, 23),
    R(PR, FG, "prune.after_list", "prune.after_list", BOTH, 0, NULL, ANY, 0, -ENOENT, 23),
    R(PR, FG, "prune.before_remove", "prune.before_remove", BOTH, EBUSY_, "prune", ANY, 0, 0, 23),
    R(PR, FG, "forget.after_move", NULL, BOTH, -ENOENT, NULL, ANY, 0, 0, 23),
    R(PR, VF, "prune.before_remove", "prune.before_remove", BOTH, EBUSY_, "prune", ANY, 0, 0, 24),
    R(PR, RD, "prune.before_remove", "prune.before_remove", BOTH, EBUSY_, "prune", ANY, 0, 0, 24),
    R(PR, VF, "forget.after_move", NULL, BOTH, -ENOENT, NULL, ANY, 0, 0, 24),
    R(PR, RD, "forget.after_move", NULL, BOTH, -ENOENT, NULL, ANY, 0, 0, 24),
    R(PR, UM, "forget.after_move", NULL, BOTH, -ENOENT, NULL, ANY, 0, 0, 20),
    R(PR, RI, "forget.after_move", NULL, BOTH, -ENOENT, NULL, ANY, 0, 0, 2),
    R(PR, GC, NULL, NULL, BOTH, 0, NULL, ANY, 0, 0, 13),
    R(PR, GX, NULL, NULL, BOTH, 0, NULL, ANY, 0, 0, 13),
    R(PR, RI, NULL, NULL, BOTH, 0, NULL, ANY, 0, 0, 2),
    R(PR, UM, NULL, NULL, BOTH, 0, NULL, ANY, 0, 0, 20),
    R(PR, VF, NULL, NULL, BOTH, 0, NULL, ANY, 0, 0, 24),
    R(PR, RD, NULL, NULL, BOTH, 0, NULL, ANY, 0, 0, 24),

    /* ---- A = VF: S1 shared; its manifest lock at update_manifest.after_lock ---- */
    R(VF, FG, NULL, NULL, BOTH, EBUSY_, "verify", ANY, 0, ANY, 24),
    R(VF, PR, NULL, NULL, BOTH, 0, NULL, EBUSY_, 0, ANY, 24),
    R(VF, VF, "update_manifest.after_lock", NULL, BOTH, ETIME_, "verify", ANY, 0, ANY, 27),
    R(VF, UM, "update_manifest.after_lock", NULL, BOTH, ETIME_, "verify", ANY, 0, ANY, 21),

    /* ---- A = RD: S1 shared ---- */
    R(RD, FG, NULL, NULL, BOTH, EBUSY_, "read", ANY, 0, ANY, 24),
    R(RD, PR, NULL, NULL, BOTH, 0, NULL, EBUSY_, 0, ANY, 24),

    /* ---- A = WS: freeze byte shared ---- */
    R(WS, GC, NULL, NULL, BOTH, EBUSY_, "freeze", ANY, 0, ANY, 15),
    R(WS, GX, NULL, NULL, BOTH, EBUSY_, "freeze", ANY, 0, ANY, 15),
    R(WS, FG, NULL, NULL, BOTH, EBUSY_, "freeze", ANY, 0, ANY, 25),
    R(WS, PR, NULL, NULL, BOTH, EBUSY_, "freeze", ANY, 0, ANY, 25),
    R(WS, WX, NULL, NULL, BOTH, EBUSY_, "freeze", ANY, 0, ANY, 30),

    /* ---- A = WX: GC lock; process locker X from proclock.after_exclusive;
     * freeze byte X at freeze.after_acquire ---- */
    /* the GC lock's holder record is written at the grant, before
     * gclock.after_lock: named from the first step */
    R(WX, GC, NULL, NULL, BOTH, EBUSY_, "freeze-exclusive", ANY, 0, ANY, 16),
    R(WX, GX, NULL, NULL, BOTH, EBUSY_, "freeze-exclusive", ANY, 0, ANY, 16),
    R(WX, WX, NULL, NULL, BOTH, EBUSY_, "freeze-exclusive", ANY, 0, ANY, 31),
    R(WX, BK, "proclock.after_exclusive", NULL, P, EBUSY_, "freeze-exclusive", ANY, 0, ANY, 11),
    R(WX, WS, "freeze.after_acquire", NULL, BOTH, EBUSY_, "freeze-exclusive", ANY, 0, ANY, 30),
    R(WX, FG, "freeze.after_acquire", NULL, BOTH, EBUSY_, "freeze-exclusive", ANY, 0, ANY, 25),
    R(WX, PR, "freeze.after_acquire", NULL, BOTH, EBUSY_, "freeze-exclusive", ANY, 0, ANY, 25),
};

static size_t step_index(mx_op a, const char *name, size_t dflt) {
  if (!name) return dflt;
  for (size_t i = 0; i < MX_MAX_STEPS && mx_ops[a].steps[i]; i++)
    if (strcmp(mx_ops[a].steps[i], name) == 0) return i;
  return (size_t)-1; /* a typo in the table matches nothing: the run fails */
}

mx_expect mx_expect_for(mx_op a, mx_op b, size_t step, mx_variant v) {
  for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
    const rule *r = &rules[i];
    if (r->a != a || r->b != b || !(r->variants & v)) continue;
    size_t from = step_index(a, r->from, 0), to = step_index(a, r->to, MX_MAX_STEPS);
    if (from == (size_t)-1 || (r->to && to == (size_t)-1)) continue;
    if (step >= from && step <= to) return r->e;
  }
  mx_expect none = {0, NULL, MX_ANY, 0, MX_ANY, 0};
  return none;
}

/*
 * datastore/freeze.c - the store freeze, the exclusive store lock and the
 * deleter guard (chunklock/freeze.h).
 *
 * The problem
 * -----------
 * Two groups must exclude each other while members of the same group
 * share: freezers (many `with-lock --shared` at once) and deleters (a GC,
 * a forget and a prune run together). One byte cannot say that: if
 * freezers hold it F_RDLCK, deleters would have to hold it F_WRLCK, and
 * then deleters would exclude each other (a GC would block every forget).
 *
 * The design: two bytes and an entry mutex
 * ----------------------------------------
 *   byte 2 (freeze)   each freezer holds it F_RDLCK; the exclusive freeze
 *                     F_WRLCK
 *   byte 3 (delete)   each deleter holds it F_RDLCK
 *   byte 4 (entry)    F_WRLCK for the few microseconds of a check-and-take
 * Nobody ever takes byte 3 F_WRLCK: deleters only share it, so they never
 * exclude each other. Freezers only share byte 2, so they never exclude
 * each other either. The exclusion between the groups is a check: to
 * enter, a freezer checks that nobody holds byte 3 and then takes byte 2;
 * a deleter checks that nobody holds byte 2 and then takes byte 3. The
 * check is F_OFD_GETLK with F_WRLCK, which reports any lock of another
 * open file description on the byte, read or write, and takes nothing.
 *
 * Why the entry mutex. A check followed by a take is two steps; without
 * the mutex a freezer and a deleter could both check (each sees the other
 * byte free) and both take. With "take first, then check, back off if the
 * check fails" (Dekker's announce-then-check) both can no longer succeed,
 * but both can FAIL: each sees the other's announcement, and a try-mode
 * caller gets a spurious CKL_EBUSY from a contender that itself is about
 * to give up, and a thread that already holds a deleter guard could be
 * refused a second one. The entry mutex makes check-and-take one atomic
 * step relative to every other entry:
 *
 *   (E1) Every ACQUISITION of byte 2 or 3 happens inside the entry mutex,
 *        right after the check of the other byte, on a lock file verified
 *        to be the one at the path.
 *   (E2) Releases happen at any time, outside the mutex. A release only
 *        removes a conflict, so it can never invalidate a check that
 *        said "free".
 * Hence: if a deleter's check sees byte 2 free under the mutex and it takes
 * byte 3 before leaving the mutex, no freezer can be holding byte 2 (it
 * would have been seen: holders only appear under the mutex, E1), and no
 * freezer can take byte 2 while the deleter holds byte 3 (its check, under
 * the mutex, sees byte 3). Symmetrically for freezers. And a caller gets
 * CKL_EBUSY only because a member of the other group HOLDS its byte, never
 * because one is merely trying.
 *
 * The mutex is held for two fcntl calls and a verify. It is taken by
 * polling (never F_OFD_SETLKW, so a stopped holder cannot wedge a caller
 * past its deadline); even a try-mode caller polls it for up to
 * ENTRY_WAIT_MS, because a busy entry mutex says nothing about the freeze.
 * A process killed inside it loses it with its description.
 *
 * The exclusive freeze adds the GC lock and the process locker
 * (exclusive), in the order a strict GC takes them (GC lock, then process
 * locker), and then byte 2 F_WRLCK under the same entry protocol: the
 * check of byte 3 excludes deleters, the F_WRLCK excludes every freezer
 * and the deleters' checks of byte 2 see it.
 *
 * Starvation: a steady stream of overlapping deleters keeps a freezer
 * out (and vice versa); with a deadline the waiter retries with backoff
 * and may time out. Maintenance windows are expected to be waited for,
 * not raced.
 *
 * Names. A CKL_EBUSY names a holder of the byte found held. Shared holders
 * (freezers, deleters) are named by the roster (target "<lock>#freeze" or
 * "<lock>#delete"); the exclusive freeze by its holder record at slot 2,
 * which is exact and therefore read first when byte 2 is held F_WRLCK.
 *   (E3) A shared holder registers BEFORE it enters and deregisters AFTER
 *        it has unlocked its byte, so whenever the kernel shows a shared
 *        holder on byte 2 or 3, a roster record of that group exists.
 *        A record without the lock (an entrant that is refused or still
 *        waiting, a leaver that has unlocked) is harmless: the roster is
 *        consulted only when the kernel says the byte IS held, and then it
 *        names a member of the group in the way.
 *   (E4) The exclusive freeze writes its record right after its F_WRLCK
 *        grant, still under the entry mutex, and zeroes it before the
 *        unlock (never after: it could erase a later holder's record).
 * What is left (a contender between the failed check and the lookup while
 * the last holder leaves) is covered by the bounded re-probe of
 * locks/busy.c; a busy entry mutex or a holder whose name cannot be
 * written stays unknown, still busy.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chunklock/freeze.h"
#include "chunklock/roster.h"
#include "common/internal.h"
#include "datastore/ops_internal.h"
#include "datastore/state.h"
#include "datastore/store_internal.h"
#include "locks/locks_internal.h"

#define FREEZE_BYTE 2
#define DELETE_BYTE 3
#define ENTRY_BYTE 4
#define ENTRY_WAIT_MS 2000
#define REPLACED_RETRIES 8

typedef enum role { ROLE_FREEZE, ROLE_FREEZE_EXCL, ROLE_DELETE } role;

static const char *role_suffix(role r) { return r == ROLE_DELETE ? "#delete" : "#freeze"; }

static int64_t remaining_ms(const ckl__deadline *d) {
  if (d->timeout_ms <= 0) return d->timeout_ms; /* CKL_TRY or CKL_FOREVER */
  int64_t left = (d->end_ns - ckl__now_monotonic_ns()) / 1000000;
  return left > 0 ? left : CKL_TRY; /* past the deadline: one last try */
}

/* Is byte `b` locked by another open file description (any type)?
 * 1 (and *excl = 1 if by an F_WRLCK), 0, or -errno. */
static int byte_held(int fd, int b, int *excl) {
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = b, .l_len = 1};
  if (fcntl(fd, F_OFD_GETLK, &fl) != 0) return -errno;
  if (excl) *excl = fl.l_type == F_WRLCK;
  return fl.l_type != F_UNLCK;
}

/* Take the entry mutex on fd by polling, at most ENTRY_WAIT_MS or the
 * caller's deadline, whichever is longer. 0, CKL_EBUSY, -errno. */
static int entry_lock(int fd, const ckl__deadline *caller) {
  int64_t wait = ENTRY_WAIT_MS;
  int64_t left = remaining_ms(caller);
  if (left == CKL_FOREVER) wait = CKL_FOREVER;
  else if (left > wait) wait = left;
  ckl__deadline d;
  ckl__deadline_init(&d, wait);
  for (;;) {
    int rc = ckl__ofd_setlk(fd, F_WRLCK, ENTRY_BYTE, 1, 0);
    if (rc != -EAGAIN) return rc;
    if (!ckl__deadline_backoff(&d)) return CKL_EBUSY;
  }
}

static void entry_unlock(int fd) { (void)ckl__ofd_setlk(fd, F_UNLCK, ENTRY_BYTE, 1, 0); }

/* Name whoever holds blocker_byte (the byte found held) into *out. */
static void name_blocker(ckl_store *st, int fd, int blocker_byte, ckl_holder *out) {
  if (!out) return;
  memset(out, 0, sizeof *out);
  char target[4200];
  const char *suffix = blocker_byte == DELETE_BYTE ? "#delete" : "#freeze";
  if (ckl__pathf(target, sizeof target, "%s%s", st->lock_path, suffix) < 0) return;
  ckl__strlcpy(out->target, target, sizeof out->target);
  /* The exclusive freeze's record is exact (E4); the roster could name a
   * shared freezer that is merely trying (E3). */
  int excl = 0;
  if (blocker_byte == FREEZE_BYTE && byte_held(fd, FREEZE_BYTE, &excl) == 1 && excl) {
    unsigned char rec[CKL__HOLDER_REC_SIZE];
    ssize_t n = pread(fd, rec, sizeof rec, ckl__holder_slot(FREEZE_BYTE));
    if (n == (ssize_t)sizeof rec && ckl__holder_record_parse(rec, sizeof rec, out) == 0) return;
  }
  ckl__state *state = NULL;
  if (ckl__state_open(st->path, &state) == 0) {
    ckl_holder h;
    memset(&h, 0, sizeof h);
    int rc = ckl__state_holder_for_target(state, target, &h);
    ckl__state_close(state);
    if (rc == 0 && h.known) {
      *out = h;
      if (!out->target[0]) ckl__strlcpy(out->target, target, sizeof out->target);
      return;
    }
  }
}

/*
 * One entry into the protocol for role r: check the other group's byte,
 * take ours, all under the entry mutex (E1), with the lock file verified.
 * Returns the fd holding our byte, or CKL_EBUSY (*blocker = the byte found
 * held), CKL_EREPLACED (the file was replaced: retry), -errno.
 */
static int try_enter(ckl_store *st, role r, const char *op, const ckl__deadline *d,
                     int *blocker) {
  struct stat sb;
  int fd = ckl__lockfile_open(st->lock_path, 0, NULL, &sb);
  if (fd < 0) return fd;
  int rc = entry_lock(fd, d);
  if (rc < 0) {
    if (rc == CKL_EBUSY) *blocker = ENTRY_BYTE;
    ckl__close(fd);
    return rc;
  }
  /* Lock, then verify: an entry mutex on a replaced file excludes nobody. */
  rc = ckl__lockfile_verify(fd, st->lock_path);
  if (rc == 0) {
    int other = r == ROLE_DELETE ? FREEZE_BYTE : DELETE_BYTE;
    int held = byte_held(fd, other, NULL);
    if (held < 0) {
      rc = held;
    } else if (held) {
      *blocker = other;
      rc = CKL_EBUSY;
    } else {
      rc = CKL_FAILPOINT("freeze.after_check");
    }
    if (rc == 0) {
      short type = r == ROLE_FREEZE_EXCL ? F_WRLCK : F_RDLCK;
      rc = ckl__ofd_setlk(fd, type, r == ROLE_DELETE ? DELETE_BYTE : FREEZE_BYTE, 1, 0);
      if (rc == -EAGAIN) { /* only byte 2: a freeze of the other kind */
        *blocker = FREEZE_BYTE;
        rc = CKL_EBUSY;
      }
    }
    if (rc == 0 && r == ROLE_FREEZE_EXCL) {
      /* (E4): named before the entry mutex lets anyone check byte 2. */
      char rt[CKL_TOKEN_HEX_LEN + 1];
      int w = ckl__random_token(rt);
      if (w == 0)
        w = ckl__holder_record_write(fd, ckl__holder_slot(FREEZE_BYTE), rt, op,
                                     ckl__now_realtime_ns());
      if (w < 0)
        ckl__log_warn("%s: cannot write the exclusive freeze's holder record: %s",
                      st->lock_path, ckl_strerror(w));
    }
  }
  entry_unlock(fd);
  if (rc < 0) {
    ckl__close(fd); /* drops whatever this description held */
    return rc;
  }
  return fd;
}

/* Enter with retries until the deadline. fd or an error; the holder is
 * named on CKL_EBUSY / CKL_ETIMEDOUT. */
static int enter(ckl_store *st, role r, const char *op, int64_t timeout_ms, ckl_holder *busy) {
  ckl__deadline d;
  ckl__deadline_init(&d, timeout_ms);
  int replaced = 0;
  ckl__reprobe rp = {0};
  for (;;) {
    int blocker = 0;
    int fd = try_enter(st, r, op, &d, &blocker);
    if (fd >= 0) return fd;
    if (fd == CKL_EREPLACED) {
      if (++replaced <= REPLACED_RETRIES) continue;
      if (timeout_ms == CKL_TRY) return CKL_EREPLACED;
    } else if (fd != CKL_EBUSY) {
      if (fd != CKL_EFAILPOINT && !ckl_is_domain_error(fd))
        ckl__log_error("%s: freeze: %s", st->lock_path, ckl_strerror(fd));
      return fd;
    }
    if (!ckl__deadline_backoff(&d)) {
      if (fd == CKL_EBUSY && busy) {
        struct stat sb;
        int pfd = ckl__lockfile_open(st->lock_path, 1, NULL, &sb);
        if (blocker == ENTRY_BYTE || pfd < 0) {
          memset(busy, 0, sizeof *busy);
          ckl__strlcpy(busy->target, st->lock_path, sizeof busy->target);
        } else {
          name_blocker(st, pfd, blocker, busy);
        }
        ckl__close(pfd);
        /* Nameless: the holder may be leaving right now; enter again for a
         * short bound (locks/busy.c) rather than report a false busy. Not
         * for a busy entry mutex: that was polled for ENTRY_WAIT_MS already
         * and has no name to find. */
        if (blocker != ENTRY_BYTE && !busy->known && ckl__reprobe_next(&rp)) continue;
      }
      if (fd == CKL_EREPLACED) return CKL_ETIMEDOUT;
      return timeout_ms == CKL_TRY ? CKL_EBUSY : CKL_ETIMEDOUT;
    }
  }
}

/* Register the holder in the roster; failures only cost names. */
static void roster_add(ckl_store *st, role r, const char *operation, void **state_out,
                       char token[CKL_TOKEN_HEX_LEN + 1]) {
  token[0] = '\0';
  *state_out = NULL;
  char target[4200];
  if (ckl__pathf(target, sizeof target, "%s%s", st->lock_path, role_suffix(r)) < 0) return;
  ckl__state *state = NULL;
  int rc = ckl__state_open(st->path, &state);
  if (rc == 0) {
    ckl__roster_reg reg = {.operation = operation, .target = target,
                           .flags = r == ROLE_FREEZE_EXCL ? CKL_ROSTER_EXCLUSIVE : 0};
    rc = ckl__state_register(state, &reg, token);
  }
  if (rc < 0) {
    ckl__log_warn("%s: %s cannot register in the roster (%s): a busy contender cannot "
                  "name it", st->path, operation, ckl_strerror(rc));
    ckl__state_close(state);
    token[0] = '\0';
    return;
  }
  *state_out = state;
}

static void roster_drop(void **state, char token[CKL_TOKEN_HEX_LEN + 1]) {
  if (*state && token[0]) (void)ckl__state_deregister(*state, token);
  ckl__state_close(*state);
  *state = NULL;
  token[0] = '\0';
}

static bool op_ok(const char *op) { return !op || (op[0] && strlen(op) < 32); }

int ckl_freeze_acquire(ckl_store *st, ckl_freeze_mode mode, ckl_freeze *f,
                       const ckl_freeze_opts *opts) {
  static const ckl_freeze_opts defaults = {.timeout_ms = CKL_TRY};
  const ckl_freeze_opts *o = opts ? opts : &defaults;
  if (!st || !f || f->held || (mode != CKL_FREEZE_SHARED && mode != CKL_FREEZE_EXCLUSIVE) ||
      o->timeout_ms < CKL_FOREVER || !op_ok(o->operation))
    return -EINVAL;
  memset(f, 0, sizeof *f);
  f->fd = -1;
  role r = mode == CKL_FREEZE_EXCLUSIVE ? ROLE_FREEZE_EXCL : ROLE_FREEZE;
  const char *op = o->operation ? o->operation
                                : mode == CKL_FREEZE_EXCLUSIVE ? "freeze-exclusive" : "freeze";
  ckl__deadline d;
  ckl__deadline_init(&d, o->timeout_ms);
  int rc = 0;
  /* Keeps the store in the operations' registry while we wait, so that
   * backups of other processes in our way are named (ops_common.c). */
  ckl__state *names = NULL;
  if (r == ROLE_FREEZE_EXCL) (void)ckl__ops_state_open(st, &names);
  if (r == ROLE_FREEZE_EXCL) {
    /* GC lock, then process locker: a strict GC's order, so the two never
     * hold one each while waiting for the other's. */
    /* Its holder record names us: a GC refused by it must not report "gc". */
    rc = ckl__gclock_acquire_as(st->lock_path, &f->gc, remaining_ms(&d), o->busy_holder, op);
    if (rc == 0)
      rc = ckl__proclock_exclusive_as(st->proclock, &f->pl, remaining_ms(&d), o->busy_holder, op);
    if (rc < 0) goto fail;
  }
  /* (E3): a shared freezer is in the roster before it can hold byte 2. The
   * exclusive one is named by its record (E4) and registers once it holds,
   * so that it is never the name of a shared freezer's byte. */
  if (r == ROLE_FREEZE) roster_add(st, r, op, &f->state_, f->token);
  rc = enter(st, r, op, remaining_ms(&d), o->busy_holder);
  if (rc < 0) goto fail;
  f->fd = rc;
  f->held = 1;
  f->mode = mode;
  f->since_ns = ckl__now_realtime_ns();
  f->owner_pid = ckl__getpid();
  if (r == ROLE_FREEZE_EXCL) roster_add(st, r, op, &f->state_, f->token);
  ckl__ops_state_close(st, names);
  /* Held and named: what `with-lock` runs its command under. */
  if ((rc = CKL_FAILPOINT("freeze.after_acquire")) < 0) {
    ckl_freeze_release(f);
    return rc;
  }
  return 0;
fail:
  roster_drop(&f->state_, f->token);
  ckl__ops_state_close(st, names);
  ckl_proclock_release(&f->pl);
  ckl_gclock_release(&f->gc);
  memset(f, 0, sizeof *f);
  f->fd = -1;
  return rc;
}

int ckl_freeze_release(ckl_freeze *f) {
  if (!f || !f->held) return 0;
  if (f->owner_pid == ckl__getpid()) {
    /* Exclusive: name gone, record zeroed (E4), then unlock. Shared: unlock,
     * then deregister (E3). */
    if (f->mode == CKL_FREEZE_EXCLUSIVE) {
      roster_drop(&f->state_, f->token);
      (void)ckl__holder_record_clear(f->fd, ckl__holder_slot(FREEZE_BYTE));
    }
    (void)ckl__ofd_setlk(f->fd, F_UNLCK, FREEZE_BYTE, 1, 0);
    roster_drop(&f->state_, f->token); /* no-op if dropped above */
  }
  /* In a fork child this only closes the inherited copy: the parent's
   * description, and its lock, live on. */
  ckl__close(f->fd);
  ckl_proclock_release(&f->pl);
  ckl_gclock_release(&f->gc);
  memset(f, 0, sizeof *f);
  f->fd = -1;
  return 0;
}

int ckl_deleter_acquire(ckl_store *st, ckl_deleter *dg, const ckl_freeze_opts *opts) {
  static const ckl_freeze_opts defaults = {.timeout_ms = CKL_TRY};
  const ckl_freeze_opts *o = opts ? opts : &defaults;
  if (!st || !dg || dg->held || o->timeout_ms < CKL_FOREVER || !op_ok(o->operation))
    return -EINVAL;
  memset(dg, 0, sizeof *dg);
  dg->fd = -1;
  /* (E3): in the roster before byte 3 can be held. */
  roster_add(st, ROLE_DELETE, o->operation ? o->operation : "delete", &dg->state_, dg->token);
  int fd = enter(st, ROLE_DELETE, NULL, o->timeout_ms, o->busy_holder);
  if (fd < 0) {
    roster_drop(&dg->state_, dg->token);
    return fd;
  }
  dg->fd = fd;
  dg->held = 1;
  dg->since_ns = ckl__now_realtime_ns();
  dg->owner_pid = ckl__getpid();
  return 0;
}

int ckl_deleter_release(ckl_deleter *dg) {
  if (!dg || !dg->held) return 0;
  if (dg->owner_pid == ckl__getpid()) {
    (void)ckl__ofd_setlk(dg->fd, F_UNLCK, DELETE_BYTE, 1, 0);
    roster_drop(&dg->state_, dg->token); /* after the unlock (E3) */
  }
  ckl__close(dg->fd);
  memset(dg, 0, sizeof *dg);
  dg->fd = -1;
  return 0;
}

int ckl_freeze_probe(ckl_store *st, ckl_freeze_info *out) {
  if (!st || !out) return -EINVAL;
  memset(out, 0, sizeof *out);
  struct stat sb;
  int fd = ckl__lockfile_open(st->lock_path, 1, NULL, &sb);
  if (fd < 0) return fd;
  int excl = 0;
  int rc = byte_held(fd, FREEZE_BYTE, &excl);
  if (rc > 0) out->frozen = excl ? CKL_FREEZE_EXCLUSIVE : CKL_FREEZE_SHARED;
  if (rc >= 0) {
    rc = byte_held(fd, DELETE_BYTE, NULL);
    if (rc > 0) out->deleting = 1;
  }
  ckl__close(fd);
  return rc < 0 ? rc : 0;
}

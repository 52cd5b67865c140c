/*
 * tests/model/gc.pml - the GC / forget / backup / sweep protocol of
 * DESIGN.md section 5 as implemented (gc/gc.c, gc/mark.c, gc/sweep.c,
 * datastore/state_gc.c, the backup's touch rule of datastore/chunk.c),
 * for spin. docs/model.md explains the abstraction, the bounds and the
 * results; tests/model/check.sh runs it.
 *
 * The world: three chunks and two snapshots.
 *   S0  finished before anything starts, references C0 and C1.
 *   S1  written by the backup, references C0 (reused from its base S0,
 *       or found again by the insert's dedup check) and C2 (new content).
 *   C0, C1 exist with an old atime (0); C2 does not exist yet.
 * Four processes run concurrently in every interleaving: one backup,
 * one forget of S0, one GC, and a reaper that may remove the backup's
 * roster record at any moment (its lease expired while it was suspended,
 * or another host judged it dead).
 *
 * Time is logical: era 1 before the GC begins, era 2 from gc_begin on
 * (phase1_start = 2); initial atimes are 0. A touch or a write sets
 * atime = the current era. Only comparisons with the cutoff matter, and
 * "touched after the cutoff" is exactly "atime >= cutoff" here; the real
 * margin exists so that the kernel's coarse timestamps keep that true.
 *
 * Each Promela step is one atomic action of the implementation: one
 * system call on a chunk (utimensat, rename, renameat2, unlink, stat) or
 * one LMDB write transaction (gc_begin, the forget's move + set entry,
 * take_unmarked's check + clearing of gc_active, is_removed).
 *
 * Safety (ltl "safe"): a chunk referenced by a live snapshot is never
 * gone: it is at its name or (inside the sweep's rename window) at its
 * .gc- trash name. Live: S0 until it is forgotten; S1 from the moment the
 * backup counts on a chunk, while its roster record exists (a writer that
 * lost it is bound to withdraw: the GC may have started without seeing
 * it), and once published until withdrawn.
 *
 * Mutants (-D at spin -a), each removing one mechanism; check.sh expects
 * every mutant listed there to violate "safe":
 *   NO_REMOVED_MARK   the GC ignores an index that vanished and never
 *                     marks the removed-during-GC set (Proxmox's first fix)
 *   NO_BASE_TOUCH     reusing a chunk of the base snapshot does not touch
 *                     it: the writer trusts its shared lock on the base
 *   NO_DEDUP_TOUCH    the insert's dedup check is a stat, not a touch
 *   NO_OLDEST_WRITER  the cutoff ignores the oldest registered writer
 *   NO_RECHECK        the sweep unlinks after the rename without re-stat
 *   NO_RENAME         the sweep unlinks right after its stat
 *   FORGET_SPLIT      the forget reads gc_active in one transaction and
 *                     moves the snapshot + records it in another
 *   CLEAR_SPLIT       the GC's final check and the clearing of gc_active
 *                     are two transactions
 *   NO_REFRESH        the backup publishes without checking that its
 *                     roster record still exists, and never withdraws
 */

#define NC 3          /* chunks C0 C1 C2 */
#define NS 2          /* snapshots S0 S1 */
#define C0 0
#define C1 1
#define C2 2
#define S0 0
#define S1 1
#define NEVER 3       /* "no writer registered": above every era */

/* where a snapshot directory is */
#define ABSENT 0
#define IN_PLACE 1
#define IN_TRASH 2
#define DELETED 3

/* references: S0 = {C0, C1}, S1 = {C0, C2} */
#define REF(s, c) ((s) == S0 && ((c) == C0 || (c) == C1) || (s) == S1 && ((c) == C0 || (c) == C2))

/* ---- the store --------------------------------------------------------- */
bool at_name[NC];      /* .chunks/xxxx/<hex> exists */
byte atime[NC];        /* its atime (era) */
bool in_trash[NC];     /* .chunks/xxxx/.gc-<hex> exists */
byte trash_atime[NC];
byte where[NS];        /* ABSENT IN_PLACE IN_TRASH DELETED */
bool has_index[NS];    /* its index file is written */
bool finished[NS];     /* its manifest is written */
byte s0_shared;        /* shared holders of S0's snapshot lock */
bool s0_excl;          /* S0's snapshot lock held exclusively (forget) */

/* ---- coordination state (LMDB) ---------------------------------------- */
byte era = 1;
bool gc_active;
byte phase1_start;
bool registered;       /* the backup's roster record */
byte writer_start;
byte removed[NS];      /* removed-during-GC set: 0 none, 1 unmarked, 2 handed out */

/* ---- the backup's claims ------------------------------------------------ */
bool claims[NC];       /* S1 counts on this chunk (it will reference it) */
bool backup_done;
bool withdrawn;        /* the backup lost its roster record and withdrew S1 */

/* ---- observations (for the non-vacuity checks) --------------------------- */
bool gc_done;          /* the GC finished its sweep */
bool gc_aborted;       /* the GC aborted before the sweep */
bool garbage_removed;  /* the sweep unlinked C1 (S0's chunk nobody reuses) */
bool trash_marked;     /* the GC marked S0 from .trash */

#define S1_LIVE (where[S1] == IN_PLACE && (registered || finished[S1]))
#define LIVE_REF(c) ((where[S0] == IN_PLACE && REF(S0, c)) || (claims[c] && S1_LIVE))
#define PRESENT(c) (at_name[c] || in_trash[c])
#define SAFE (!LIVE_REF(C0) || PRESENT(C0)) && (!LIVE_REF(C1) || PRESENT(C1)) && \
             (!LIVE_REF(C2) || PRESENT(C2))

ltl safe { [] (SAFE) }
/* Non-vacuity: check.sh expects each of these to be VIOLATED, i.e. the
 * run it excludes is reachable in the correct model. */
ltl gc_can_finish { [] !gc_done }
ltl gc_can_remove_garbage { [] !garbage_removed }
ltl gc_can_mark_trash { [] !(trash_marked && backup_done && gc_done) }
ltl backup_can_withdraw { [] !(withdrawn && gc_done) }
/* In the correct model a concurrent forget never makes the GC abort. */
ltl gc_never_aborts { [] !gc_aborted }

/* utimensat(UTIME_NOW): succeeds only if the name exists at that instant. */
inline touch(c, ok) {
  atomic {
    if
    :: at_name[c] -> atime[c] = era; ok = true
    :: else -> ok = false
    fi
  }
}

/* write temp + rename onto the name: a complete new copy, atime = now. */
inline write_new(c) {
  atomic { at_name[c] = true; atime[c] = era }
}

/* ckl_chunk_insert: touch as the dedup check, else write. */
inline insert(c) {
#ifdef NO_DEDUP_TOUCH
  atomic {
    if
    :: at_name[c] -> claims[c] = true    /* exists (stat): dedup, atime unchanged */
    :: else -> skip
    fi
  }
  if
  :: !claims[c] -> write_new(c); claims[c] = true
  :: else -> skip
  fi
#else
  touch(c, ok);
  if
  :: ok -> claims[c] = true
  :: else -> write_new(c); claims[c] = true
  fi
#endif
}

/* ckl__forget_held: the state transaction that moves snapshot s to .trash
 * (recording it in the removed set if a GC is marking), then the
 * immediate delete when no GC was. */
inline forget_txn(s) {
#ifdef FORGET_SPLIT
  was_active = gc_active;
  atomic {
#else
  atomic {
    was_active = gc_active;
#endif
    if
    :: was_active -> removed[s] = 1
    :: else -> skip
    fi;
    where[s] = IN_TRASH
  }
  if
  :: !was_active -> where[s] = DELETED  /* no GC marking: delete at once */
  :: else -> skip                       /* the GC marks it and purges it */
  fi
}

proctype Backup() {
  bool ok, base, was_active;
  /* process locker (shared), group lock; the base snapshot's lock shared,
   * held until the end: a forget of the base gets CKL_EBUSY meanwhile. */
  atomic {
    if
    :: where[S0] == IN_PLACE && finished[S0] && !s0_excl -> s0_shared++; base = true
    :: else -> base = false
    fi
  }
  /* register in the roster BEFORE touching any chunk */
  atomic { registered = true; writer_start = era }
  where[S1] = IN_PLACE;
  /* C0: known from the base (ckl_backup_reuse_chunk), else inserted */
  if
  :: base ->
#ifdef NO_BASE_TOUCH
     claims[C0] = true
#else
     touch(C0, ok);
     if
     :: ok -> claims[C0] = true
     :: else -> write_new(C0); claims[C0] = true /* ENOENT: upload it again */
     fi
#endif
  :: else -> insert(C0)
  fi;
  insert(C2);
  has_index[S1] = true;
#ifdef NO_REFRESH
  finished[S1] = true;
  registered = false;
#else
  /* refresh the roster record before publishing: gone means a GC may be
   * running that never saw this writer (CKL_ELOCKLOST) */
  if
  :: !registered -> goto withdraw
  :: else -> skip
  fi;
  finished[S1] = true;
  /* deregister; -ENOENT: reaped since the refresh, withdraw all the same */
  atomic {
    if
    :: registered -> registered = false; ok = true
    :: else -> ok = false
    fi
  }
  if
  :: ok -> goto done
  :: else -> skip
  fi;
withdraw:
  forget_txn(S1);
  withdrawn = true;
#endif
done:
  atomic { if :: base -> s0_shared-- :: else -> skip fi }
  backup_done = true
}

proctype Reaper() {
  if
  :: atomic { registered -> registered = false }
  :: skip
  fi
}

proctype Forget() {
  bool was_active;
  /* snapshot lock exclusive, never waits: busy -> CKL_EBUSY, give up */
  atomic {
    if
    :: where[S0] == IN_PLACE && s0_shared == 0 -> s0_excl = true
    :: else -> goto out
    fi
  }
  forget_txn(S0);
  s0_excl = false;
out:
  skip
}

/* GC touch of every chunk of snapshot s (index already read: mmap). */
inline mark_chunks(s) {
  c = 0;
  do
  :: c < NC ->
     if
     :: REF(s, c) -> touch(c, ok)  /* ENOENT: a missing chunk, counted */
     :: else -> skip
     fi;
     c++
  :: else -> break
  od
}

proctype GC() {
  bool listed[NS];
  byte s, c, cutoff, oldest, a, take;
  bool ok, aborted;
  /* gc_begin: one write transaction */
  atomic {
    era = 2;
    gc_active = true;
    phase1_start = era;
    if
    :: registered -> oldest = writer_start
    :: else -> oldest = NEVER
    fi
  }
  /* phase 1a: list every index file, snapshot by snapshot */
  s = 0;
  do
  :: s < NS -> listed[s] = (where[s] == IN_PLACE && has_index[s]); s++
  :: else -> break
  od;
  /* ... then mark each listed snapshot */
  s = 0;
  do
  :: s < NS ->
     if
     :: listed[s] ->
        if
        :: where[s] == IN_PLACE -> mark_chunks(s)  /* opened its index (mmap) */
        :: where[s] != IN_PLACE ->
           /* vanished: only a recorded forget may do that (G1) */
#ifdef NO_REMOVED_MARK
           skip
#else
           if
           :: removed[s] != 0 -> skip
           :: else -> aborted = true
           fi
#endif
        fi
     :: else -> skip
     fi;
     if
     :: aborted -> break
     :: else -> s++
     fi
  :: else -> break
  od;
  if
  :: aborted -> goto abort
  :: else -> skip
  fi;
  /* phase 1b: the removed-during-GC set, until one transaction finds
   * nothing unmarked and clears gc_active */
#ifdef NO_REMOVED_MARK
  gc_active = false;
#else
  do
  :: atomic {
       take = NS;
       s = 0;
       do
       :: s < NS && removed[s] == 1 -> removed[s] = 2; take = s; break
       :: s < NS && removed[s] != 1 -> s++
       :: s >= NS -> break
       od;
#ifndef CLEAR_SPLIT
       if
       :: take == NS -> gc_active = false
       :: else -> skip
       fi
#endif
     }
     if
     :: take == NS ->
#ifdef CLEAR_SPLIT
        gc_active = false;
#endif
        break
     :: else ->
        if
        :: where[take] == IN_TRASH -> mark_chunks(take); trash_marked = true
        :: where[take] != IN_TRASH -> aborted = true; break
        fi
     fi
  od;
  if
  :: aborted -> goto abort
  :: else -> skip
  fi;
#endif
  /* phase 2: sweep with cutoff = min(phase1_start - safety, oldest) - margin */
#ifdef NO_OLDEST_WRITER
  cutoff = phase1_start;
#else
  if
  :: oldest < phase1_start -> cutoff = oldest
  :: else -> cutoff = phase1_start
  fi;
#endif
  c = 0;
  do
  :: c < NC ->
     /* fstatat while walking the prefix directory */
     atomic {
       if
       :: at_name[c] -> a = atime[c]
       :: else -> a = NEVER
       fi
     }
     if
     :: a < cutoff ->
#ifdef NO_RENAME
        atomic {
          at_name[c] = false;
          if :: c == C1 -> garbage_removed = true :: else -> skip fi
        }
#else
        /* renameat2(<hex>, .gc-<hex>, RENAME_NOREPLACE) */
        atomic {
          if
          :: at_name[c] -> at_name[c] = false; in_trash[c] = true; trash_atime[c] = atime[c]; ok = true
          :: else -> ok = false /* ENOENT: someone else removed it */
          fi
        }
        if
        :: ok ->
#ifdef NO_RECHECK
           atomic {
             in_trash[c] = false;
             if :: c == C1 -> garbage_removed = true :: else -> skip fi
           }
#else
           /* fstatat the trash name: unlink if still old, else put back */
           if
           :: trash_atime[c] < cutoff ->
              atomic {
                in_trash[c] = false;
                if :: c == C1 -> garbage_removed = true :: else -> skip fi
              }
           :: else ->
              /* renameat2(.gc-<hex>, <hex>, RENAME_NOREPLACE); EEXIST: a
               * writer rewrote it meanwhile, drop the copy */
              atomic {
                if
                :: !at_name[c] -> at_name[c] = true; atime[c] = trash_atime[c]
                :: else -> skip
                fi;
                in_trash[c] = false
              }
           fi
#endif
        :: else -> skip
        fi
#endif
     :: else -> skip
     fi;
     c++
  :: else -> break
  od;
  /* phase 3: purge .trash, end (clear the removed set) */
  atomic {
    if
    :: where[S0] == IN_TRASH -> where[S0] = DELETED
    :: else -> skip
    fi;
    if
    :: where[S1] == IN_TRASH -> where[S1] = DELETED
    :: else -> skip
    fi;
    removed[S0] = 0;
    removed[S1] = 0
  }
  gc_done = true;
  goto out;
abort:
  /* gc_abort: clear gc_active and the set; nothing was swept */
  atomic { gc_active = false; removed[S0] = 0; removed[S1] = 0; gc_aborted = true };
out:
  skip
}

init {
  atomic {
    at_name[C0] = true; atime[C0] = 0;
    at_name[C1] = true; atime[C1] = 0;
    where[S0] = IN_PLACE; has_index[S0] = true; finished[S0] = true;
    run Backup();
    run Forget();
    run GC();
    run Reaper()
  }
}

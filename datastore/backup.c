/*
 * datastore/backup.c - the backup session (chunklock/backup.h).
 *
 * Lock order. DESIGN.md section 5 lists the backup's steps as Proxmox
 * does (group lock, base snapshot, process locker, roster), but section 3
 * fixes one order for every operation: process locker -> group ->
 * snapshot -> manifest, and debug builds abort on any other. A forget
 * takes snapshot -> manifest, a GC in strict mode takes the process locker
 * exclusively, a prune takes group -> snapshot -> manifest: if a backup
 * took the group lock and then waited for the process locker while a
 * maintenance task holding the process locker waited for that group, the
 * two would deadlock as soon as either waited. One global order makes
 * every wait safe, so the backup follows it: process locker (shared),
 * group (exclusive), base snapshot (shared), new snapshot (exclusive,
 * created under the lock). The waits that remain are the process locker's
 * deadline and the manifest lock's; all the others never wait.
 *
 * The writer rule (docs/state.md). The roster record is written before the
 * first lock (so before the first chunk is touched or inserted), and
 * removed only after the manifest is written and the locks are released.
 *
 * Naming (issue 7). A strict GC or an exclusive freeze of another process
 * that finds the process locker held shared names the holder from the
 * roster (the oldest writer, datastore/ops_common.c), and a forget that
 * finds the base locked names the "backup-base" record. So each record
 * spans its lock: registered BEFORE the lock is requested, deregistered
 * AFTER it is released. A record without its lock (a backup still queuing
 * for the process locker, or one that has just let go) is harmless: the
 * roster is asked only when the kernel says the lock IS held, and the
 * record is then a writer's that holds it or is about to. Before the manifest, the record is
 * refreshed: if it is gone (reaped, or the state was recreated), a GC may
 * be running that never saw this writer and computed a sweep cutoff that
 * does not protect the chunks touched so far, so the snapshot is not
 * published (CKL_ELOCKLOST) and is removed. If the record vanishes in the
 * short window between the refresh and the final check, the manifest is
 * already written but nobody can have used the snapshot yet (we still hold
 * its exclusive lock): it is withdrawn through the forget path all the
 * same.
 *
 * Every removal of the partial snapshot goes through ckl__forget_held,
 * never a plain rm -rf (see forget.c for why).
 */
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chunklock/atomic_file.h"
#include "chunklock/backup.h"
#include "chunklock/index.h"
#include "chunklock/manifest.h"
#include "common/internal.h"
#include "datastore/ops_internal.h"
#include "locks/atomic_file.h"

typedef struct file_rec {
  char name[CKL_ARCHIVE_NAME_MAX + 1];
  uint64_t size;
  ckl_digest csum;
} file_rec;

struct ckl_backup_archive {
  ckl_backup *b;
  ckl_backup_archive *next;
  ckl_index_writer *w;
  ckl_index_kind kind;
  uint64_t chunk_size, size;
  char name[CKL_ARCHIVE_NAME_MAX + 1];
};

struct ckl_backup {
  ckl_store *st;
  ckl__state *state;
  ckl_snapshot_name name, base;
  char name_str[CKL_SNAP_NAME_MAX + 1];
  bool has_base, dir_made, mlock_made;
  ckl_lock_order order;
  ckl_proclock_guard pg;
  ckl_path_lock group_lock, base_lock, snap_lock;
  char token[CKL_TOKEN_HEX_LEN + 1], base_token[CKL_TOKEN_HEX_LEN + 1];
  int snapfd;
  char snap_path[PATH_MAX];
  /* mu guards everything below: several threads may insert, reuse and
   * write archives of one session at once. */
  pthread_mutex_t mu;
  ckl__digest_set known; /* chunks inserted or touched by this writer */
  file_rec *files;
  size_t nfiles;
  ckl_backup_archive *open;
  int sticky; /* first archive close failure */
};

const ckl_snapshot_name *ckl_backup_snapshot(const ckl_backup *b) { return &b->name; }
const ckl_snapshot_name *ckl_backup_base(const ckl_backup *b) {
  return b->has_base ? &b->base : NULL;
}

static void drop_archives(ckl_backup *b) {
  while (b->open) {
    ckl_backup_archive *a = b->open;
    b->open = a->next;
    ckl_index_writer_abort(a->w);
    free(a);
  }
}

/* Remove the partial snapshot (if made), deregister, release everything,
 * free. */
static void teardown(ckl_backup *b, bool remove_snapshot) {
  ckl_store *st = b->st;
  drop_archives(b);
  ckl__close(b->snapfd);
  b->snapfd = -1;
  if (remove_snapshot && b->dir_made) {
    int rc = CKL_FAILPOINT("backup.abort.before_remove");
    if (rc == 0)
      rc = ckl__forget_held(st, b->state, &b->name, &b->snap_lock, &b->order, "backup abort",
                            NULL);
    if (rc < 0)
      ckl__log_error("%s: backup %s: cannot remove the partial snapshot: %s", st->path, b->name_str,
                     ckl_strerror(rc));
  } else if (remove_snapshot && b->snap_lock.held) {
    /* Locked the new name but never created it: no litter. The manifest
     * lock file goes first, while the snapshot lock (which alone makes
     * it ours, see precreate_manifest_lock) is still held. */
    char path[PATH_MAX];
    if (b->mlock_made && ckl__store_manifest_lock_path(st, &b->name, path, sizeof path) >= 0 &&
        unlink(path) != 0 && errno != ENOENT)
      ckl__log_warn("%s: backup %s: cannot remove %s: %s", st->path, b->name_str, path,
                    strerror(errno));
    ckl_path_lock_unlink(&b->snap_lock);
  }
  ckl_path_lock_release(&b->snap_lock);
  ckl_path_lock_release(&b->base_lock);
  ckl_path_lock_release(&b->group_lock);
  if (b->pg.held) {
    ckl_proclock_release(&b->pg);
    ckl_lock_order_pop(&b->order, CKL_LEVEL_PROCESS);
  }
  /* Deregister only once the snapshot is published or gone (the writer
   * rule: registered for as long as its chunks may be unreferenced) and
   * the locks the records name are released (see the header). */
  int rc = ckl__ops_deregister(b->state, b->token);
  if (rc < 0 && rc != -ENOENT)
    ckl__log_warn("%s: backup %s: deregister: %s", st->path, b->name_str, ckl_strerror(rc));
  (void)ckl__ops_deregister(b->state, b->base_token);
  ckl__ops_state_close(st, b->state);
  ckl__digest_set_free(&b->known);
  free(b->files);
  pthread_mutex_destroy(&b->mu);
  free(b);
}

static void log_busy(const ckl_store *st, const char *what, const char *name,
                     const ckl_holder *who) {
  char h[256];
  ckl_holder_format(who, h, sizeof h);
  ckl__log_info("%s: backup: %s %s is busy: held by %s", st->path, what, name, h);
}

/* The newest complete snapshot of the group, if any. */
static int find_latest(ckl_store *st, const ckl_group_name *g, ckl_snapshot_name *out,
                       bool *found) {
  ckl_snapshot_info *list = NULL;
  size_t n = 0;
  *found = false;
  int rc = ckl_snapshot_list(st, g, &list, &n);
  if (rc == -ENOENT) return 0;
  if (rc < 0) return rc;
  for (size_t i = 0; i < n && !*found; i++) {
    if (list[i].state != CKL_SNAP_COMPLETE) continue;
    *out = list[i].name;
    *found = true;
  }
  ckl_snapshot_list_free(list, n);
  return 0;
}

/* Base snapshot: shared lock, and it must be complete. `latest`: the base
 * was picked by CKL_BACKUP_BASE_LATEST, so its vanishing is not the
 * caller's error (begin_steps picks again) and is not logged as one. */
static int lock_base(ckl_backup *b, ckl_holder *who, bool latest) {
  ckl_store *st = b->st;
  char base_str[CKL_SNAP_NAME_MAX + 1];
  ckl__ops_snap_str(&b->base, base_str);
  /* Named in busy messages of a forget of the base: registered before the
   * lock (see the header); failing to register costs only that name. */
  if (ckl__ops_register(st, b->state, "backup-base", base_str, 0, b->base_token) < 0)
    b->base_token[0] = '\0';
  ckl_snap_lock_opts so = {.order = &b->order, .busy_holder = who};
  int rc = ckl_snapshot_lock(st, &b->base, CKL_LOCK_SHARED, &b->base_lock, &so);
  if (rc < 0) (void)ckl__ops_deregister(b->state, b->base_token);
  if (rc == CKL_EBUSY) log_busy(st, "base snapshot", base_str, who);
  if (rc == -ENOENT && latest)
    ckl__log_debug("%s: backup: newest snapshot %s was forgotten before it could be locked as "
                   "the base: picking again", st->path, base_str);
  else if (rc == -ENOENT)
    ckl__log_error("%s: backup: base snapshot %s does not exist", st->path, base_str);
  if (rc < 0) return rc;
  if (!ckl__ops_has_manifest(st, &b->base)) {
    ckl__log_error("%s: backup: base snapshot %s is not complete (no manifest)", st->path,
                   base_str);
    return -ENOENT;
  }
  return 0;
}

/*
 * Make the new snapshot's manifest lock file exist now, before anything is
 * written. Removing a partial snapshot goes through the forget path, which
 * takes the manifest lock; if its file had to be created then, a backup
 * that failed because the disk is full (the likeliest failure of all)
 * could not create it either (ENOSPC for the directory entry) and would
 * leave its partial snapshot behind, and a forget meant to free space
 * would fail the same way. With the file made here, that path only opens
 * it. A full disk at this point fails the backup before it made anything.
 *
 * Why creating the file without locking it is harmless: nobody else can
 * hold or wait for this manifest lock, since ckl_manifest_lock requires
 * the snapshot directory, which does not exist yet and is created by us
 * under the exclusive snapshot lock we hold; and opening and closing a
 * file of our own description never touches other descriptions' OFD
 * locks.
 */
static int precreate_manifest_lock(ckl_backup *b) {
  char path[PATH_MAX];
  int rc = ckl__store_manifest_lock_path(b->st, &b->name, path, sizeof path);
  if (rc < 0) return rc;
  int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    rc = -errno;
    ckl__log_error("%s: backup %s: cannot create the manifest lock file %s: %s", b->st->path,
                   b->name_str, path, ckl_strerror(rc));
    return rc;
  }
  ckl__close(fd);
  b->mlock_made = true;
  return 0;
}

static int begin_steps(ckl_backup *b, const ckl_group_name *g, const ckl_backup_opts *o,
                       ckl_holder *who) {
  ckl_store *st = b->st;
  char gname[CKL_SNAP_NAME_MAX + 1];
  snprintf(gname, sizeof gname, "%s/%s", g->type, g->id);
  int rc = ckl__ops_state_open(st, &b->state);
  if (rc < 0) return rc;

  /* 0. the writer record, before the first lock (see the header) and so
   * before any chunk is touched */
  rc = ckl__ops_register(st, b->state, "backup", b->name_str,
                         CKL_ROSTER_WRITER | CKL_ROSTER_EXCLUSIVE, b->token);
  if (rc < 0) return rc;

  /* 1. process locker, shared (a strict GC or maintenance excludes us) */
  rc = ckl_proclock_shared(st->proclock, &b->pg, o->proclock_timeout_ms, who);
  if (rc == CKL_EBUSY || rc == CKL_ETIMEDOUT) log_busy(st, "process locker", st->lock_path, who);
  if (rc < 0) return rc;
  if ((rc = ckl_lock_order_push(&b->order, CKL_LEVEL_PROCESS)) < 0) return rc;

  /* 2. group lock: one backup (or prune) per group */
  ckl_snap_lock_opts go = {.order = &b->order, .operation = "backup", .busy_holder = who};
  rc = ckl_group_lock(st, g, &b->group_lock, &go);
  if (rc == CKL_EBUSY) log_busy(st, "group", gname, who);
  if (rc < 0) return rc;

  /* Holding the group lock, no other backup of the group runs: a
   * snapshot without manifest and without lock holder is abandoned. */
  rc = ckl__remove_abandoned(st, b->state, g, &b->order);
  if (rc < 0) return rc;

  if (o->base) {
    b->base = *o->base;
    b->has_base = true;
  } else if (o->flags & CKL_BACKUP_BASE_LATEST) {
    if ((rc = find_latest(st, g, &b->base, &b->has_base)) < 0) return rc;
  }
  char rel[CKL_SNAP_NAME_MAX + 1];
  if ((rc = ckl__snapshot_relpath(&b->name, rel, sizeof rel)) < 0) return rc;
  struct stat sb;
  if (fstatat(st->dirfd, rel, &sb, AT_SYMLINK_NOFOLLOW) == 0) {
    ckl__log_error("%s: backup: snapshot %s already exists", st->path, b->name_str);
    return -EEXIST;
  }

  /* 3. base snapshot, shared: it cannot be forgotten under us once locked.
   * Between the listing and the lock it can: a forget takes no group lock.
   * For an explicit base that is -ENOENT; for "the newest" it means the
   * newest is now another snapshot (or none), so pick again. The group lock
   * keeps new snapshots out, so each round sees a strictly shorter list and
   * the loop ends. */
  bool latest = !o->base && (o->flags & CKL_BACKUP_BASE_LATEST);
  while (b->has_base && (rc = lock_base(b, who, latest)) == -ENOENT && latest &&
         !b->base_lock.held)
    if ((rc = find_latest(st, g, &b->base, &b->has_base)) < 0) return rc;
  if (b->has_base && rc < 0) return rc;

  /* 4. the new snapshot, exclusive, locked before it exists */
  ckl_snap_lock_opts so = {.order = &b->order,
                           .operation = "backup",
                           .busy_holder = who,
                           .flags = CKL_SNAP_LOCK_CREATING};
  rc = ckl_snapshot_lock(st, &b->name, CKL_LOCK_EXCLUSIVE, &b->snap_lock, &so);
  if (rc == CKL_EBUSY) log_busy(st, "snapshot", b->name_str, who);
  if (rc < 0) return rc;
  if ((rc = precreate_manifest_lock(b)) < 0) return rc;
  if ((rc = CKL_FAILPOINT("backup.after_locks")) < 0) return rc;
  /* The writer record was made at step 0; this step keeps its name for
   * the harnesses (race matrix, soak) that park a backup here. */
  if ((rc = CKL_FAILPOINT("backup.after_register")) < 0) return rc;

  /* 5. the directory */
  if ((rc = ckl__ops_make_group_dir(st, g)) < 0) {
    ckl__log_error("%s/%s: cannot create the group directory: %s", st->path, gname,
                   ckl_strerror(rc));
    return rc;
  }
  if (mkdirat(st->dirfd, rel, 0755) != 0) {
    rc = -errno;
    ckl__log_error("%s/%s: cannot create the snapshot directory: %s", st->path, rel,
                   ckl_strerror(rc));
    return rc;
  }
  b->dir_made = true;
  b->snapfd = openat(st->dirfd, rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (b->snapfd < 0) return -errno;
  if ((rc = ckl__pathf(b->snap_path, sizeof b->snap_path, "%s/%s", st->path, rel)) < 0) return rc;
  return CKL_FAILPOINT("backup.after_mkdir");
}

int ckl_backup_begin(ckl_store *st, const ckl_group_name *g, const ckl_backup_opts *opts,
                     ckl_backup **out) {
  static const ckl_backup_opts no_opts = {0};
  if (!out) return -EINVAL;
  *out = NULL;
  if (!opts) opts = &no_opts;
  if (!st || !ckl__group_name_ok(g)) return -EINVAL;
  if (opts->base && (strcmp(opts->base->type, g->type) || strcmp(opts->base->id, g->id) ||
                     !ckl__snapshot_name_ok(opts->base))) {
    ckl__log_error("%s: backup of %s/%s: the base snapshot must be of the same group", st->path,
                   g->type, g->id);
    return -EINVAL;
  }
  ckl_backup *b = calloc(1, sizeof *b);
  if (!b) return -ENOMEM;
  b->st = st;
  b->snapfd = -1;
  pthread_mutex_init(&b->mu, NULL);
  int64_t t = opts->time_s ? opts->time_s : ckl__now_realtime_ns() / 1000000000;
  int rc = ckl_snapshot_name_make(g->type, g->id, t, &b->name);
  if (rc < 0) {
    ckl__log_error("%s: backup of %s/%s: time %lld is out of range", st->path, g->type, g->id,
                   (long long)t);
    teardown(b, false);
    return rc;
  }
  ckl__ops_snap_str(&b->name, b->name_str);
  ckl_holder who = {0};
  rc = begin_steps(b, g, opts, &who);
  if (opts->busy_holder) *opts->busy_holder = who;
  if (rc < 0) {
    teardown(b, true);
    return rc;
  }
  *out = b;
  return 0;
}

/* ---- chunks ------------------------------------------------------------------ */

static int remember(ckl_backup *b, const ckl_digest *d) {
  pthread_mutex_lock(&b->mu);
  int rc = ckl__digest_set_insert(&b->known, d);
  pthread_mutex_unlock(&b->mu);
  return rc < 0 ? rc : 0;
}

int ckl_backup_insert_chunk(ckl_backup *b, const ckl_digest *d, const void *data, size_t len) {
  if (!b || !d || (!data && len)) return -EINVAL;
  int rc = ckl_chunk_insert(b->st->chunks, d, data, len, NULL);
  if (rc < 0) return rc;
  int r = remember(b, d);
  return r < 0 ? r : rc;
}

int ckl_backup_reuse_chunk(ckl_backup *b, const ckl_digest *d) {
  if (!b || !d) return -EINVAL;
  /* A successful touch is the proof GC needs: the chunk exists now and its
   * atime is newer than any running GC's cutoff. */
  int rc = ckl_chunk_touch(b->st->chunks, d);
  if (rc < 0) return rc;
  return remember(b, d);
}

/* ---- archives ---------------------------------------------------------------- */

static bool name_taken(const ckl_backup *b, const char *name) {
  for (size_t i = 0; i < b->nfiles; i++)
    if (strcmp(b->files[i].name, name) == 0) return true;
  for (const ckl_backup_archive *a = b->open; a; a = a->next)
    if (strcmp(a->name, name) == 0) return true;
  return false;
}

static void unlink_open(ckl_backup *b, ckl_backup_archive *a) {
  for (ckl_backup_archive **pp = &b->open; *pp; pp = &(*pp)->next) {
    if (*pp == a) {
      *pp = a->next;
      return;
    }
  }
}

int ckl_backup_archive_open(ckl_backup *b, const char *name, uint64_t chunk_size,
                            ckl_backup_archive **out) {
  if (!out) return -EINVAL;
  *out = NULL;
  if (!b || !name) return -EINVAL;
  ckl_archive_kind k = ckl_archive_name_kind(name, strlen(name));
  if (k == CKL_ARCHIVE_NONE || (k == CKL_ARCHIVE_FIDX && chunk_size == 0)) {
    ckl__log_error("%s: backup %s: archive \"%s\": %s", b->st->path, b->name_str, name,
                   k == CKL_ARCHIVE_NONE ? "not a valid archive name (*.didx or *.fidx)"
                                         : "a fixed index needs a chunk size");
    return -EINVAL;
  }
  ckl_backup_archive *a = calloc(1, sizeof *a);
  if (!a) return -ENOMEM;
  a->b = b;
  a->kind = k == CKL_ARCHIVE_DIDX ? CKL_INDEX_DYNAMIC : CKL_INDEX_FIXED;
  a->chunk_size = a->kind == CKL_INDEX_FIXED ? chunk_size : 0;
  ckl__strlcpy(a->name, name, sizeof a->name);
  pthread_mutex_lock(&b->mu);
  bool taken = name_taken(b, name);
  if (!taken) { /* reserve the name before the slow part */
    a->next = b->open;
    b->open = a;
  }
  pthread_mutex_unlock(&b->mu);
  if (taken) {
    free(a);
    return -EEXIST;
  }
  char path[PATH_MAX];
  int rc = ckl__pathf(path, sizeof path, "%s/%s", b->snap_path, name);
  if (rc >= 0)
    rc = ckl_index_writer_create(path, a->kind, a->chunk_size, b->st->atomic_flags, &a->w);
  if (rc < 0) {
    pthread_mutex_lock(&b->mu);
    unlink_open(b, a);
    pthread_mutex_unlock(&b->mu);
    free(a);
    return rc;
  }
  *out = a;
  return 0;
}

int ckl_backup_archive_append(ckl_backup_archive *a, const ckl_digest *d, uint64_t len) {
  if (!a || !d || len == 0) return -EINVAL;
  ckl_backup *b = a->b;
  pthread_mutex_lock(&b->mu);
  bool known = ckl__digest_set_contains(&b->known, d);
  pthread_mutex_unlock(&b->mu);
  if (!known) {
    /* Only a touch or an insert by this registered writer proves to a GC
     * that the chunk exists: an index must never reference anything else. */
    char hex[CKL_DIGEST_HEX_LEN + 1];
    ckl_digest_to_hex(d, hex);
    ckl__log_error(
        "%s: backup %s: archive %s: chunk %s was neither inserted nor reused in this "
        "backup",
        b->st->path, b->name_str, a->name, hex);
    return -EINVAL;
  }
  uint64_t value = a->kind == CKL_INDEX_DYNAMIC ? a->size + len : len;
  int rc = ckl_index_writer_add(a->w, value, d);
  if (rc == 0) a->size += len;
  return rc;
}

int ckl_backup_archive_write_chunk(ckl_backup_archive *a, const void *data, size_t len,
                                   ckl_digest *d_out) {
  if (!a || !data || len == 0) return -EINVAL;
  ckl_digest d;
  ckl_digest_compute(data, len, &d);
  if (d_out) *d_out = d;
  int ins = ckl_backup_insert_chunk(a->b, &d, data, len);
  if (ins < 0) return ins;
  int rc = ckl_backup_archive_append(a, &d, len);
  return rc < 0 ? rc : ins;
}

int ckl_backup_archive_close(ckl_backup_archive *a) {
  if (!a) return -EINVAL;
  ckl_backup *b = a->b;
  file_rec fr = {0};
  ckl__strlcpy(fr.name, a->name, sizeof fr.name);
  int rc = ckl_index_writer_commit(a->w, &fr.csum);
  a->w = NULL;
  if (rc == 0) {
    struct stat sb;
    if (fstatat(b->snapfd, a->name, &sb, AT_SYMLINK_NOFOLLOW) != 0)
      rc = -errno;
    else
      fr.size = (uint64_t)sb.st_size;
  }
  if (rc == 0) rc = CKL_FAILPOINT("backup.archive.after_close");
  pthread_mutex_lock(&b->mu);
  unlink_open(b, a);
  if (rc == 0) {
    file_rec *v = realloc(b->files, (b->nfiles + 1) * sizeof *v);
    if (v) {
      b->files = v;
      b->files[b->nfiles++] = fr;
    } else {
      rc = -ENOMEM;
    }
  }
  if (rc < 0 && b->sticky == 0) b->sticky = rc;
  pthread_mutex_unlock(&b->mu);
  if (rc < 0)
    ckl__log_error("%s: backup %s: archive %s: %s", b->st->path, b->name_str, a->name,
                   ckl_strerror(rc));
  free(a);
  return rc;
}

void ckl_backup_archive_abort(ckl_backup_archive *a) {
  if (!a) return;
  ckl_backup *b = a->b;
  pthread_mutex_lock(&b->mu);
  unlink_open(b, a);
  pthread_mutex_unlock(&b->mu);
  ckl_index_writer_abort(a->w);
  free(a);
}

/* ---- finish -------------------------------------------------------------------- */

static int check_locks(ckl_backup *b) {
  const ckl_path_lock *locks[] = {&b->group_lock, &b->snap_lock};
  for (size_t i = 0; i < CKL__ARRAY_SIZE(locks); i++) {
    int rc = ckl_path_lock_verify(locks[i]);
    if (rc < 0) {
      ckl__log_error("%s: backup %s: lock file %s was replaced or removed: %s", b->st->path,
                     b->name_str, locks[i]->path, ckl_strerror(rc));
      return CKL_ELOCKLOST;
    }
  }
  return 0;
}

static int write_manifest(ckl_backup *b) {
  json_t *m = NULL;
  int rc = ckl_manifest_new(&b->name, &m);
  for (size_t i = 0; rc == 0 && i < b->nfiles; i++)
    rc = ckl_manifest_add_file(m, b->files[i].name, b->files[i].size, &b->files[i].csum);
  if (rc == 0) rc = ckl_manifest_write_new(b->st, &b->name, m, 0);
  json_decref(m);
  return rc;
}

static int finish_steps(ckl_backup *b) {
  ckl_store *st = b->st;
  if (b->open) {
    ckl__log_error("%s: backup %s: archive %s is still open at finish", st->path, b->name_str,
                   b->open->name);
    return -EINVAL;
  }
  if (b->sticky) return b->sticky;
  int rc = check_locks(b);
  if (rc < 0) return rc;
  if (b->has_base && !ckl__ops_has_manifest(st, &b->base)) {
    char base_str[CKL_SNAP_NAME_MAX + 1];
    ckl__ops_snap_str(&b->base, base_str);
    ckl__log_error("%s: backup %s: the base snapshot %s vanished during the backup", st->path,
                   b->name_str, base_str);
    return -ENOENT;
  }
  /* Chunks durable before the manifest that references them. */
  if ((rc = ckl_chunkstore_sync(st->chunks)) < 0) {
    ckl__log_error("%s: backup %s: chunk store sync: %s", st->path, b->name_str, ckl_strerror(rc));
    return rc;
  }
  if ((rc = CKL_FAILPOINT("backup.before_finish")) < 0) return rc;
  /* A runtime task's last safe point: after the (possibly long) sync, just
   * before the manifest. A lease that ran out meanwhile is not published. */
  if ((rc = ckl__observe_checkpoint()) < 0) return rc;
  rc = ckl__state_refresh(b->state, b->token, 0);
  if (rc == -ENOENT) {
    b->token[0] = '\0';
    ckl__log_error(
        "%s: backup %s: the roster record is gone (reaped or state recreated); a GC "
        "may not have seen this writer: not publishing",
        st->path, b->name_str);
    return CKL_ELOCKLOST;
  }
  if (rc < 0) return rc;
  if ((rc = write_manifest(b)) < 0) return rc;
  if (!(st->atomic_flags & CKL_ATOMIC_NOSYNC)) {
    char group_rel[CKL_SNAP_NAME_MAX + 1];
    snprintf(group_rel, sizeof group_rel, "%s/%s", b->name.type, b->name.id);
    int gfd = openat(st->dirfd, group_rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (gfd >= 0) {
      (void)ckl__atomic_fsync_dir(gfd);
      ckl__close(gfd);
    }
  }
  if ((rc = CKL_FAILPOINT("backup.after_manifest")) < 0) return rc;
  /* Still registered now that the manifest is out? Then every GC that
   * started meanwhile saw this writer. The record itself goes only after
   * the locks (teardown), so that it names the process locker's holder
   * for as long as that is held; vanishing after this check is no
   * different from vanishing after a deregister. */
  rc = ckl__state_refresh(b->state, b->token, 0);
  if (rc == -ENOENT) {
    b->token[0] = '\0';
    ckl__log_error(
        "%s: backup %s: the roster record vanished before the manifest was committed: "
        "withdrawing the snapshot",
        st->path, b->name_str);
    return CKL_ELOCKLOST;
  }
  if (rc < 0)
    ckl__log_warn("%s: backup %s: checking the roster record: %s", st->path, b->name_str,
                  ckl_strerror(rc));
  return 0;
}

int ckl_backup_finish(ckl_backup *b) {
  if (!b) return -EINVAL;
  int rc = finish_steps(b);
  if (rc < 0)
    ckl__log_error("%s: backup %s failed: %s; removing the partial snapshot", b->st->path,
                   b->name_str, ckl_strerror(rc));
  teardown(b, rc < 0);
  return rc;
}

void ckl_backup_abort(ckl_backup *b) {
  if (!b) return;
  ckl__log_info("%s: backup %s aborted; removing the partial snapshot", b->st->path, b->name_str);
  teardown(b, true);
}

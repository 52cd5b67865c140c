/*
 * chunklock/backup.h - writing a snapshot (the backup session) and
 * reading one back (restore).
 *
 * Backup (DESIGN.md section 5; docs/datastore-ops.md):
 *
 *     ckl_backup *b;
 *     ckl_backup_opts o = {.flags = CKL_BACKUP_BASE_LATEST};
 *     rc = ckl_backup_begin(st, &group, &o, &b);   // locks, roster, mkdir
 *     ckl_backup_archive *a;
 *     rc = ckl_backup_archive_open(b, "root.didx", 0, &a);
 *     rc = ckl_backup_archive_write_chunk(a, data, len, NULL); // insert + append
 *     // or, for a chunk known from the base snapshot:
 *     rc = ckl_backup_reuse_chunk(b, &d);            // touch; -ENOENT: upload it
 *     rc = ckl_backup_archive_append(a, &d, len);
 *     rc = ckl_backup_archive_close(a);              // the index is written
 *     rc = ckl_backup_finish(b);                     // manifest; frees b
 *   or ckl_backup_abort(b) to drop everything (frees b).
 *
 * Locks, in the fixed order (process locker -> group -> snapshot ->
 * manifest): the process locker shared, the group lock exclusive (one
 * backup per group), the base snapshot shared (it cannot be forgotten
 * meanwhile), the new snapshot exclusive (nobody reads or forgets it
 * before it is finished). The backup registers in the roster as a writer
 * BEFORE it touches or inserts any chunk, and deregisters after the
 * manifest is written: a GC's sweep cutoff waits for every writer it can
 * see, so a chunk this backup touched is never swept under it.
 *
 * A backup that fails or is aborted removes its partial snapshot through
 * the forget path (moved to .trash under the coordination state, so a GC
 * that listed it does not abort). A backup that dies leaves an abandoned
 * snapshot (no manifest, no lock holder); the next backup of the same
 * group, or a prune of it, removes it the same way.
 *
 * Threads: the calls of one session may come from several threads at once
 * (insert, reuse, and different archives in parallel); one archive is used
 * by one thread at a time; begin, finish and abort are not concurrent with
 * anything else on the session.
 */
#ifndef CHUNKLOCK_BACKUP_H
#define CHUNKLOCK_BACKUP_H

#include <sys/types.h>

#include "chunk.h"
#include "common.h"
#include "snapshot.h"
#include "store.h"

#ifdef __cplusplus
extern "C" {
#endif

/** ckl_backup_opts.flags: use the newest complete snapshot of the group as
 * the base (none if the group has no complete snapshot). */
#define CKL_BACKUP_BASE_LATEST 0x1u

typedef struct ckl_backup_opts {
  int64_t time_s;                /* snapshot time, seconds since the epoch
                                    (UTC); 0 = now, in whole seconds */
  const ckl_snapshot_name *base; /* base snapshot (same group), or NULL */
  unsigned flags;                /* CKL_BACKUP_* */
  int64_t proclock_timeout_ms;   /* waiting for the process locker (a strict
                                    GC holds it exclusively): 0 = CKL_TRY */
  ckl_holder *busy_holder;       /* out, optional: who is in the way on
                                    CKL_EBUSY / CKL_ETIMEDOUT */
} ckl_backup_opts;

typedef struct ckl_backup ckl_backup;
typedef struct ckl_backup_archive ckl_backup_archive;

/**
 * Begin a backup of group `g`. opts may be NULL. Removes the group's
 * abandoned snapshots first (see above). On success *out is the session
 * and the snapshot directory exists, empty.
 *
 * Returns 0, or:
 *   CKL_EBUSY      the group is being backed up or pruned, the base
 *                  snapshot is being forgotten, or the process locker is
 *                  held exclusively (a strict GC, maintenance);
 *                  opts->busy_holder names the holder when known
 *   CKL_ETIMEDOUT  the process locker was still held at its deadline
 *   -EEXIST        a snapshot with this name (group + time) exists
 *   -ENOENT        the base snapshot does not exist or is not complete
 *   -EINVAL        bad name, base in another group, time out of range
 *   CKL_ELOCKORDER, and errors of the coordination state and the
 *   filesystem (-EACCES, -ENOSPC, -EROFS, ...)
 */
CKL_EXTERN int ckl_backup_begin(ckl_store *st, const ckl_group_name *g, const ckl_backup_opts *opts,
                                ckl_backup **out);

/** The snapshot being written, and the base (NULL if none). */
CKL_EXTERN const ckl_snapshot_name *ckl_backup_snapshot(const ckl_backup *b);
CKL_EXTERN const ckl_snapshot_name *ckl_backup_base(const ckl_backup *b);

/**
 * Insert a chunk: touch it if it exists (a dedup hit), else write it.
 * `d` is the SHA-256 of data (ckl_digest_compute). Returns
 * CKL_INSERT_NEW / CKL_INSERT_DEDUP, or the errors of ckl_chunk_insert
 * (-EINVAL, -ENOSPC, -EIO, ...), -ENOMEM.
 */
CKL_EXTERN int ckl_backup_insert_chunk(ckl_backup *b, const ckl_digest *d, const void *data,
                                       size_t len);

/**
 * Reuse a chunk known from the base snapshot without sending its data:
 * touch it. 0 when it exists (it now survives any GC, running or not), or
 * -ENOENT: it is gone (a GC swept it before this backup touched it), so
 * the caller must upload it with ckl_backup_insert_chunk. Other -errno.
 */
CKL_EXTERN int ckl_backup_reuse_chunk(ckl_backup *b, const ckl_digest *d);

/**
 * Open an archive (one index file) in the snapshot. The kind comes from
 * the name: "*.didx" (dynamic: chunks of any size) or "*.fidx" (fixed:
 * every chunk `chunk_size` bytes but the last; chunk_size is ignored for
 * didx). 0, -EINVAL (bad name, fidx without chunk_size), -EEXIST (an
 * archive of that name was already opened in this session), -ENOMEM,
 * errors of ckl_index_writer_create.
 */
CKL_EXTERN int ckl_backup_archive_open(ckl_backup *b, const char *name, uint64_t chunk_size,
                                       ckl_backup_archive **out);

/**
 * Append the next chunk of the archive: `len` plain bytes named `d`. The
 * chunk must have been inserted or reused (touched) in THIS session:
 * that is what proves to a GC that it exists, so anything else is
 * -EINVAL (logged). Also -EINVAL for len 0, a fixed chunk of the wrong
 * size; -ENOMEM.
 */
CKL_EXTERN int ckl_backup_archive_append(ckl_backup_archive *a, const ckl_digest *d, uint64_t len);

/** Digest, insert and append in one call; *d_out (optional) receives the
 * digest. Returns the result of the insert (CKL_INSERT_NEW/_DEDUP) or an
 * error of ckl_backup_insert_chunk / ckl_backup_archive_append. */
CKL_EXTERN int ckl_backup_archive_write_chunk(ckl_backup_archive *a, const void *data, size_t len,
                                              ckl_digest *d_out);

/**
 * Write the archive's index file (temp + rename) and record its name,
 * size and checksum for the manifest. Frees `a` in every case. A failure
 * is also remembered by the session: ckl_backup_finish then fails with
 * it (a snapshot missing an archive is never published).
 * 0, or the errors of ckl_index_writer_commit, failpoint codes.
 */
CKL_EXTERN int ckl_backup_archive_close(ckl_backup_archive *a);

/** Drop an archive without writing it (NULL: no-op). */
CKL_EXTERN void ckl_backup_archive_abort(ckl_backup_archive *a);

/**
 * Finish: check the locks and the base, flush chunks per the store's sync
 * policy, write the manifest (every closed archive: name, size, csum),
 * deregister, release. Frees b in every case; on failure the partial
 * snapshot is removed (forget path) and nothing is published.
 *
 * Returns 0, or:
 *   -EINVAL        an archive is still open (it is dropped)
 *   -ENOENT        the base snapshot vanished during the backup
 *   CKL_ELOCKLOST  the roster record is gone (reaped, or the coordination
 *                  state was recreated): a GC may have started without
 *                  seeing this writer, so the snapshot must not be
 *                  published; or a lock file was replaced under us
 *   the error of a failed archive close, of ckl_chunkstore_sync, of the
 *   manifest write; failpoint codes
 */
CKL_EXTERN int ckl_backup_finish(ckl_backup *b);

/** Abort: drop open archives, remove the partial snapshot (forget path),
 * deregister, release. Frees b. NULL is a no-op. */
CKL_EXTERN void ckl_backup_abort(ckl_backup *b);

/* ---- reading a snapshot (restore) -----------------------------------------
 *
 *     ckl_reader *r;
 *     rc = ckl_reader_open(st, &name, NULL, &r);    // snapshot lock shared
 *     ckl_reader_archive *a;
 *     rc = ckl_reader_archive_open(r, "root.didx", &a);
 *     ssize_t n = ckl_reader_archive_read(a, offset, buf, sizeof buf);
 *     ckl_reader_archive_close(a);
 *     rc = ckl_reader_close(r);
 *
 * The shared snapshot lock keeps the snapshot from being forgotten (a
 * forget meanwhile gets CKL_EBUSY naming this reader, which registers in
 * the roster as "read"), so the chunks it references stay referenced and
 * no GC sweeps them. Archives of one reader may be read from different
 * threads, each archive by one thread at a time.
 */

typedef struct ckl_reader ckl_reader;
typedef struct ckl_reader_archive ckl_reader_archive;

typedef struct ckl_reader_opts {
  ckl_holder *busy_holder; /* out, optional: the holder on CKL_EBUSY */
} ckl_reader_opts;

/**
 * Open a complete snapshot for reading. opts may be NULL.
 * 0, or CKL_EBUSY (being written or forgotten), -ENOENT (no such
 * snapshot, or no manifest: still being written or abandoned), the errors
 * of ckl_manifest_load (CKL_ECORRUPT, ...), of the state, -EINVAL.
 */
CKL_EXTERN int ckl_reader_open(ckl_store *st, const ckl_snapshot_name *n,
                               const ckl_reader_opts *opts, ckl_reader **out);

/** Archives listed in the manifest, in its order: count, and name i
 * (NULL past the end). */
CKL_EXTERN size_t ckl_reader_archive_count(const ckl_reader *r);
CKL_EXTERN const char *ckl_reader_archive_name(const ckl_reader *r, size_t i);

/**
 * Open an archive of the snapshot. Its index file must match the
 * manifest's size and checksum. 0, or -ENOENT (not in the manifest, or
 * the file is missing), CKL_ECORRUPT (size or checksum differs, or the
 * index does not parse), -ENOMEM, -errno.
 */
CKL_EXTERN int ckl_reader_archive_open(ckl_reader *r, const char *name, ckl_reader_archive **out);

/** The archive's size in bytes. */
CKL_EXTERN uint64_t ckl_reader_archive_size(const ckl_reader_archive *a);

/**
 * Read up to len bytes at offset. Returns the number read (0 at or past
 * the end; short only at the end), or -ENOENT (a referenced chunk is
 * missing), CKL_ECORRUPT (a chunk fails its checks, or its length does not
 * match the index), -ENOMEM, -EIO, -EINVAL.
 */
CKL_EXTERN ssize_t ckl_reader_archive_read(ckl_reader_archive *a, uint64_t offset, void *buf,
                                           size_t len);

/** Close an archive (NULL: no-op). */
CKL_EXTERN void ckl_reader_archive_close(ckl_reader_archive *a);

/** Close the reader: deregister and release the snapshot lock. Archives
 * still open are closed. Frees r (NULL: 0). 0, or a failpoint code (the
 * reader is released anyway). */
CKL_EXTERN int ckl_reader_close(ckl_reader *r);

#ifdef __cplusplus
}
#endif
#endif

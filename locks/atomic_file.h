/*
 * locks/atomic_file.h - internals shared by atomic_file.c (files, cleanup)
 * and atomic_dir.c (directories). Not installed.
 */
#ifndef CKL_LOCKS_ATOMIC_FILE_H
#define CKL_LOCKS_ATOMIC_FILE_H

#include <stdbool.h>
#include <sys/types.h>

/* Suffix tags of temp names: ".<name><tag><16 hex>". */
#define CKL__TMP_FILE_TAG ".tmp-"
#define CKL__TMP_DIR_TAG ".tmpdir-"

/* How often begin picks a fresh temp name after an O_EXCL collision or a
 * lost race with a cleanup (both need absurd luck more than once). */
#define CKL__TMP_ATTEMPTS 16

/* Split `target` into a malloc'd directory ("." if none) and a pointer to
 * its last component inside target. 0, -EINVAL (empty, ends in '/', "."
 * or ".."), -ENOMEM. */
int ckl__atomic_split(const char *target, char **dir, const char **base);

/* malloc'd "<dir>/.<base><tag><16 random hex>"; the base is cut to a
 * prefix so that the name never exceeds NAME_MAX. NULL on ENOMEM. */
char *ckl__atomic_temp_name(const char *dir, const char *base, const char *tag);

/* Pointer to the last component of a path made by ckl__atomic_temp_name. */
const char *ckl__atomic_basename(const char *path);

/* 1 if `fd` is still the entry `name` in dirfd (same dev/ino, not a
 * symlink, and still linked), 0 if not, -errno on a stat error. */
int ckl__atomic_same_entry(int dirfd, const char *name, int fd);

/* fsync a directory fd; EINVAL (a filesystem that cannot sync
 * directories) counts as success. 0 or -errno. */
int ckl__atomic_fsync_dir(int fd);

/* Remove the entry `name` in dirfd recursively, never following a
 * symlink. ENOENT anywhere counts as done (another remover got there
 * first). 0 or -errno. */
int ckl__atomic_rmtree_at(int dirfd, const char *name);

/* Remove everything inside the open directory dirfd (not dirfd itself),
 * first giving its owner rwx on it if it lacks them (a 0555 tree). */
int ckl__atomic_rm_contents(int dirfd);

#endif

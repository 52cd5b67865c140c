/*
 * datastore/file_read.h - reading a whole small file with pread, and
 * naming a file for messages. Not installed.
 *
 * Index files (and their checksums) are read with these rather than
 * mmap: a failed read returns -EIO where a mapping would deliver SIGBUS,
 * and a file truncated by someone else while it is read is an error
 * (CKL_ECORRUPT) instead of a crash. datastore/index.c says more.
 */
#ifndef CKL_DATASTORE_FILE_READ_H
#define CKL_DATASTORE_FILE_READ_H

#include <stddef.h>

/* Read exactly `size` bytes from offset 0 of fd into buf (which holds
 * size bytes), where size is what fstat said the file holds. Goes on
 * after short reads and EINTR; then checks that the file ends there.
 * Returns:
 *   0            buf holds the file, and it had exactly size bytes;
 *   CKL_ECORRUPT the file changed size since the fstat (*why says whether
 *                it ended early or went on): files read with this are
 *                never changed in place, so somebody damaged it;
 *   -errno       from pread (-EIO: a failed read).
 * Logs nothing: the caller knows the name. */
int ckl__pread_exact(int fd, void *buf, size_t size, const char **why);

/* For messages: the full path of dirfd/name, written into buf (len
 * bytes), from /proc/self/fd (callers pass a snapshot directory fd and an
 * archive name, which alone would not say which snapshot). Returns buf,
 * or name itself when it is absolute, dirfd is AT_FDCWD or the link
 * cannot be read. Meant for error paths (one readlink). */
const char *ckl__display_path(int dirfd, const char *name, char *buf, size_t len);

#endif

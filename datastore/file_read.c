/*
 * datastore/file_read.c - whole-file pread for index files, and file names
 * for messages (datastore/file_read.h has the contracts).
 *
 * Why a size check at the end: the size came from fstat before the read.
 * If the file got shorter since, pread reports end-of-file early; if it
 * got longer, the bytes past size would go unread and the caller would
 * validate a prefix of a file that no longer exists in that form. Either
 * way the bytes we hold are not one version of the file, so it is
 * CKL_ECORRUPT, not a retry: index files are written once under a temp
 * name and renamed in, so only an outside hand changes one in place.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "common/internal.h"
#include "datastore/file_read.h"

int ckl__pread_exact(int fd, void *buf, size_t size, const char **why) {
  ssize_t n = ckl__pread_upto(fd, buf, size, 0);
  if (n < 0) return (int)n;
  if ((size_t)n < size) {
    *why = "file shrank while it was read (truncated since it was opened)";
    return CKL_ECORRUPT;
  }
  /* One byte past the end must be end-of-file. */
  uint8_t extra;
  n = ckl__pread_upto(fd, &extra, 1, (off_t)size);
  if (n < 0) return (int)n;
  if (n == 0) return 0;
  *why = "file grew while it was read (changed since it was opened)";
  return CKL_ECORRUPT;
}

const char *ckl__display_path(int dirfd, const char *name, char *buf, size_t len) {
  if (name[0] == '/' || dirfd == AT_FDCWD) return name;
  char link[64];
  snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
  ssize_t n = readlink(link, buf, len - 1);
  if (n <= 0) return name;
  buf[n] = '\0';
  if (ckl__pathf(buf + n, len - (size_t)n, "/%s", name) < 0) return name;
  return buf;
}

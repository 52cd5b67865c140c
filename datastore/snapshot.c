/*
 * datastore/snapshot.c - snapshot and group names, snapshot paths.
 *
 * Names come from clients and become path components, so the rules are
 * deliberately narrow (see snapshot.h): character classes that contain no
 * '/', no control character and no NUL; an id may not start with '.', so
 * "." and ".." and hidden temp names are impossible; the time has exactly
 * one spelling, so one instant is one directory and sorting the names
 * sorts the snapshots by age. Every parser takes an explicit length: a NUL
 * byte inside the input is a character like any other, and invalid.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <linux/openat2.h> /* struct open_how, RESOLVE_* (Linux >= 5.6 headers) */

#include "common/internal.h"
#include "datastore/store_internal.h"

static bool type_char(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-';
}

static bool id_char(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         ch == '_' || ch == '.' || ch == '-';
}

int ckl_snapshot_type_valid(const char *s, size_t len) {
  if (!s || len == 0 || len > CKL_SNAP_TYPE_MAX) return 0;
  for (size_t i = 0; i < len; i++)
    if (!type_char(s[i])) return 0;
  return 1;
}

int ckl_snapshot_id_valid(const char *s, size_t len) {
  if (!s || len == 0 || len > CKL_SNAP_ID_MAX || s[0] == '.') return 0;
  for (size_t i = 0; i < len; i++)
    if (!id_char(s[i])) return 0;
  return 1;
}

/* ---- time -------------------------------------------------------------
 * Civil date <-> days since 1970-01-01 in the proleptic Gregorian
 * calendar (H. Hinnant's algorithms), independent of the process's TZ and
 * of the range of time_t. */

static int64_t days_from_civil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int64_t *m, int64_t *d) {
  z += 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  int64_t doe = z - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = yoe + era * 400 + (*m <= 2);
}

static bool leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static bool num(const char *s, int n, int64_t *out) {
  int64_t v = 0;
  for (int i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

int ckl_snapshot_time_parse(const char *s, size_t len, int64_t *out) {
  if (!s || len != CKL_SNAP_TIME_LEN) return -EINVAL;
  if (s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[19] != 'Z')
    return -EINVAL;
  int64_t y, mo, d, h, mi, se;
  if (!num(s, 4, &y) || !num(s + 5, 2, &mo) || !num(s + 8, 2, &d) || !num(s + 11, 2, &h) ||
      !num(s + 14, 2, &mi) || !num(s + 17, 2, &se))
    return -EINVAL;
  static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (mo < 1 || mo > 12 || d < 1) return -EINVAL;
  if (d > dim[mo - 1] + (mo == 2 && leap(y))) return -EINVAL;
  if (h > 23 || mi > 59 || se > 59) return -EINVAL;
  if (out) *out = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se;
  return 0;
}

#define TIME_MIN_S (-62167219200LL) /* 0000-01-01T00:00:00Z */
#define TIME_MAX_S 253402300799LL   /* 9999-12-31T23:59:59Z */

int ckl_snapshot_time_format(int64_t t, char out[CKL_SNAP_TIME_LEN + 1]) {
  if (t < TIME_MIN_S || t > TIME_MAX_S) return -EINVAL;
  int64_t days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
  int64_t secs = t - days * 86400;
  int64_t y, m, d;
  civil_from_days(days, &y, &m, &d);
  /* Digits by hand: every field is in range here, and snprintf's
   * truncation analysis cannot see that. */
  const int64_t f[6] = {y, m, d, secs / 3600, secs / 60 % 60, secs % 60};
  static const int width[6] = {4, 2, 2, 2, 2, 2};
  static const char sep[6] = {'-', '-', 'T', ':', ':', 'Z'};
  char *p = out;
  for (int i = 0; i < 6; i++) {
    int64_t v = f[i];
    for (int k = width[i] - 1; k >= 0; k--) {
      p[k] = (char)('0' + v % 10);
      v /= 10;
    }
    p += width[i];
    *p++ = sep[i];
  }
  *p = '\0';
  return 0;
}

/* ---- names --------------------------------------------------------------- */

int ckl_group_name_parsen(const char *s, size_t len, ckl_group_name *out) {
  if (!out) return -EINVAL;
  memset(out, 0, sizeof *out);
  if (!s) return -EINVAL;
  const char *slash = memchr(s, '/', len);
  if (!slash) return -EINVAL;
  size_t tl = (size_t)(slash - s), il = len - tl - 1;
  if (!ckl_snapshot_type_valid(s, tl) || !ckl_snapshot_id_valid(slash + 1, il)) return -EINVAL;
  memcpy(out->type, s, tl);
  memcpy(out->id, slash + 1, il);
  return 0;
}

int ckl_group_name_parse(const char *s, ckl_group_name *out) {
  if (!s) return ckl_group_name_parsen(NULL, 0, out);
  return ckl_group_name_parsen(s, strlen(s), out);
}

int ckl_snapshot_name_parsen(const char *s, size_t len, ckl_snapshot_name *out) {
  if (!out) return -EINVAL;
  memset(out, 0, sizeof *out);
  if (!s || len < CKL_SNAP_TIME_LEN + 4 || len > CKL_SNAP_NAME_MAX) return -EINVAL;
  size_t tl = len - CKL_SNAP_TIME_LEN - 1;
  if (s[tl] != '/') return -EINVAL;
  ckl_group_name g;
  int64_t t;
  if (ckl_group_name_parsen(s, tl, &g) < 0 ||
      ckl_snapshot_time_parse(s + tl + 1, CKL_SNAP_TIME_LEN, &t) < 0)
    return -EINVAL;
  memcpy(out->type, g.type, sizeof g.type);
  memcpy(out->id, g.id, sizeof g.id);
  memcpy(out->time, s + tl + 1, CKL_SNAP_TIME_LEN);
  out->time_s = t;
  return 0;
}

int ckl_snapshot_name_parse(const char *s, ckl_snapshot_name *out) {
  if (!s) return ckl_snapshot_name_parsen(NULL, 0, out);
  return ckl_snapshot_name_parsen(s, strlen(s), out);
}

int ckl_snapshot_name_make(const char *type, const char *id, int64_t time_s,
                           ckl_snapshot_name *out) {
  if (!out) return -EINVAL;
  memset(out, 0, sizeof *out);
  if (!type || !id) return -EINVAL;
  size_t tl = strlen(type), il = strlen(id);
  if (!ckl_snapshot_type_valid(type, tl) || !ckl_snapshot_id_valid(id, il)) return -EINVAL;
  if (ckl_snapshot_time_format(time_s, out->time) < 0) {
    memset(out, 0, sizeof *out);
    return -EINVAL;
  }
  memcpy(out->type, type, tl);
  memcpy(out->id, id, il);
  out->time_s = time_s;
  return 0;
}

bool ckl__group_name_ok(const ckl_group_name *g) {
  return g && ckl_snapshot_type_valid(g->type, strnlen(g->type, sizeof g->type)) &&
         ckl_snapshot_id_valid(g->id, strnlen(g->id, sizeof g->id)) &&
         strnlen(g->type, sizeof g->type) < sizeof g->type &&
         strnlen(g->id, sizeof g->id) < sizeof g->id;
}

bool ckl__snapshot_name_ok(const ckl_snapshot_name *n) {
  if (!n) return false;
  size_t tl = strnlen(n->type, sizeof n->type), il = strnlen(n->id, sizeof n->id);
  int64_t t;
  return tl < sizeof n->type && il < sizeof n->id && ckl_snapshot_type_valid(n->type, tl) &&
         ckl_snapshot_id_valid(n->id, il) &&
         strnlen(n->time, sizeof n->time) == CKL_SNAP_TIME_LEN &&
         ckl_snapshot_time_parse(n->time, CKL_SNAP_TIME_LEN, &t) == 0 && t == n->time_s;
}

int ckl_snapshot_name_format(const ckl_snapshot_name *n, char *buf, size_t len) {
  if (!ckl__snapshot_name_ok(n) || !buf) return -EINVAL;
  return ckl__pathf(buf, len, "%s/%s/%s", n->type, n->id, n->time);
}

void ckl_snapshot_group(const ckl_snapshot_name *n, ckl_group_name *out) {
  memset(out, 0, sizeof *out);
  memcpy(out->type, n->type, sizeof out->type);
  memcpy(out->id, n->id, sizeof out->id);
}

ckl_archive_kind ckl_archive_name_kind(const char *s, size_t len) {
  if (!s || len < 6 || len > CKL_ARCHIVE_NAME_MAX || s[0] == '.') return CKL_ARCHIVE_NONE;
  for (size_t i = 0; i < len; i++)
    if (!id_char(s[i])) return CKL_ARCHIVE_NONE;
  if (memcmp(s + len - 5, ".didx", 5) == 0) return CKL_ARCHIVE_DIDX;
  if (memcmp(s + len - 5, ".fidx", 5) == 0) return CKL_ARCHIVE_FIDX;
  return CKL_ARCHIVE_NONE;
}

/* ---- paths --------------------------------------------------------------- */

int ckl__snapshot_relpath(const ckl_snapshot_name *n, char *buf, size_t len) {
  return ckl_snapshot_name_format(n, buf, len);
}

int ckl_snapshot_path(const ckl_store *st, const ckl_snapshot_name *n, char *buf, size_t len) {
  if (!st || !ckl__snapshot_name_ok(n) || !buf) return -EINVAL;
  return ckl__pathf(buf, len, "%s/%s/%s/%s", st->path, n->type, n->id, n->time);
}

/* Open one level below dirfd as a directory without following a symlink. */
static int open_subdir(int dirfd, const char *name) {
  int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

/* openat2() said ENOSYS (kernel < 5.6) or EPERM (a seccomp filter that
 * predates it): use the component walk from then on. */
static atomic_int no_openat2;

/* "type/id/time" below the store in ONE openat2 that follows no symlink
 * anywhere (RESOLVE_NO_SYMLINKS) and cannot leave the store
 * (RESOLVE_BENEATH), instead of three openat + three close. fd, -errno,
 * or 1 when openat2 cannot be used (the caller walks). The walk reports a
 * symlink at any level as ENOTDIR (O_DIRECTORY|O_NOFOLLOW); openat2 says
 * ELOOP for one before the last component: mapped, so both paths answer
 * the same. */
static int open_beneath(int dirfd, const char *rel, int flags) {
  if (atomic_load_explicit(&no_openat2, memory_order_relaxed)) return 1;
  struct open_how how = {.flags = (uint64_t)(flags | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC),
                         .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
                                    RESOLVE_NO_MAGICLINKS};
  for (int attempt = 0; attempt < 4; attempt++) {
    long fd = syscall(SYS_openat2, dirfd, rel, &how, sizeof how);
    if (fd >= 0) return (int)fd;
    switch (errno) {
      case EINTR: continue;
      /* A rename somewhere in the store during the lookup: the kernel
       * cannot prove the walk stayed beneath, and asks for a retry. */
      case EAGAIN: continue;
      case ELOOP: return -ENOTDIR;
      case ENOSYS:
      case EPERM:
        atomic_store_explicit(&no_openat2, 1, memory_order_relaxed);
        return 1;
      case E2BIG: /* a kernel that knows openat2 but not this struct */
        atomic_store_explicit(&no_openat2, 1, memory_order_relaxed);
        return 1;
      default: return -errno;
    }
  }
  return 1; /* renames kept racing: the walk does not care */
}

int ckl__snapshot_open_dir(const ckl_store *st, const ckl_snapshot_name *n) {
  char rel[CKL_SNAP_NAME_MAX + 1];
  int rc = ckl_snapshot_name_format(n, rel, sizeof rel); /* validates n */
  if (rc < 0) return rc;
  rc = open_beneath(st->dirfd, rel, O_RDONLY);
  if (rc != 1) return rc;
  /* Component by component: O_NOFOLLOW covers only the last one. */
  int t = open_subdir(st->dirfd, n->type);
  if (t < 0) return t;
  int i = open_subdir(t, n->id);
  ckl__close(t);
  if (i < 0) return i;
  int s = open_subdir(i, n->time);
  ckl__close(i);
  return s;
}

int ckl__snapshot_dir_exists(const ckl_store *st, const ckl_snapshot_name *n) {
  char rel[CKL_SNAP_NAME_MAX + 1];
  int rc = ckl_snapshot_name_format(n, rel, sizeof rel);
  if (rc < 0) return rc;
  /* O_PATH: nothing is read through it, and it skips the permission and
   * open-file work a readable fd needs. */
  int fd = open_beneath(st->dirfd, rel, O_PATH);
  if (fd == 1) fd = ckl__snapshot_open_dir(st, n);
  if (fd < 0) return (fd == -ENOTDIR || fd == -ELOOP) ? -ENOENT : fd;
  ckl__close(fd);
  return 0;
}
